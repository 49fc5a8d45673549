"""Typed configs: dataclasses loaded from YAML with ``key.sub=value`` overrides.

Every entry point (trainers, eval, serve, demo) has one dataclass here. A config is
built by :func:`load_config` from an optional YAML file and command-line overrides;
unknown keys, wrong types and missing required values raise :class:`ConfigError`
naming the dotted key and where the value came from (the file or the command line).
Cross-field rules live in each dataclass's ``__post_init__`` and raise ``ValueError``;
:func:`load_config` re-raises them as :class:`ConfigError` with the source attached.

>>> cfg = load_config(RolloutConfig, overrides=["backend=hf", "max_model_len=256"])
>>> (cfg.backend, cfg.max_model_len)
('hf', 256)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from latentrl.models.named import check_model_reference

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type, missing, or invalid."""


# --------------------------------------------------------------------------------------
# Config dataclasses
# --------------------------------------------------------------------------------------


def require_positive(cfg: Any, *names: str) -> None:
    """Raise ``ValueError("<name>: must be positive")`` for the first field that is not (None passes)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name}: must be positive")


def require_model_references(cfg: Any, *names: str) -> None:
    """Each model field that is set is a folder, a Hub id (``org/name``) or a named model."""
    for name in names:
        if (value := getattr(cfg, name)) is not None:
            try:
                check_model_reference(value)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None


def require_non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}: must be >= 0, got {getattr(cfg, name)}")


@dataclass
class RolloutConfig:
    """How the shared rollout engine decodes (see ``latentrl.rollout``)."""

    backend: Literal["auto", "vllm", "vllm_server", "hf"] = "auto"
    """``auto`` picks in-process vLLM when it is installed, else transformers."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype in the decoding engine (float32 keeps vLLM and transformers identical)."""
    max_model_len: int | None = None
    """Context length; default: the model's ``max_position_embeddings``."""
    gpu_memory_utilization: float = 0.3
    """vLLM on GPU: fraction of GPU memory for weights and KV cache (colocated with training)."""
    cpu_kvcache_space_gib: float = 1.0
    """vLLM on CPU: KV-cache size in GiB (sets ``VLLM_CPU_KVCACHE_SPACE``)."""
    max_num_seqs: int = 256
    """vLLM: most sequences decoded at once."""
    enable_sleep_mode: bool = False
    """vLLM on GPU: allow ``sleep()``/``wake_up()`` to free memory between rollouts."""
    server_urls: list[str] = field(default_factory=list)
    """``vllm_server``: base URLs of running vLLM OpenAI servers, e.g. ``http://127.0.0.1:8000``."""
    server_timeout_s: float = 600.0
    """``vllm_server``: seconds to wait for one HTTP response."""
    hf_batch_size: int = 64
    """transformers backend: prompts (times ``n``) generated per batch."""
    seed: int = 0
    """Engine seed (vLLM's global seed; per-request seeds come from sampling parameters)."""

    def __post_init__(self) -> None:
        require_positive(self, "max_model_len", "cpu_kvcache_space_gib", "hf_batch_size")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization: must be in (0, 1]")
        if self.backend == "vllm_server" and not self.server_urls:
            raise ValueError("server_urls: the vllm_server backend needs at least one URL")


@dataclass
class TinyModelConfig:
    """A tiny Qwen2-architecture causal LM and its locally trained tokenizer."""

    vocab_size: int = 512
    """Target vocabulary of the byte-level BPE tokenizer trained on the task's text."""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 2
    """head_dim = hidden_size / num_heads must be 64: vLLM's CPU attention rejects 16."""
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("num_heads: must divide hidden_size")
        if self.hidden_size // self.num_heads != 64:
            raise ValueError(
                f"num_heads: head_dim = hidden_size / num_heads = "
                f"{self.hidden_size // self.num_heads}, but vLLM's CPU attention needs 64"
            )


@dataclass
class PretrainConfig:
    """Supervised pre-training that makes a tiny model competent on a task."""

    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    num_examples: int = 20000
    """Training rows drawn from the task's train split."""
    thought_rate: float = 0.0
    """Fraction of examples that show the worked solution (all but its final line) as a
    thought between latent markers before the answer cue. Above 0, every target is the
    final answer line alone: the model answers directly, and reads worked steps only as
    thoughts in its context, as a real LLM reads text (the DLR demo's main model)."""
    answer_cue: str = "Answer:"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.thought_rate <= 1.0:
            raise ValueError("thought_rate: must be in [0, 1]")
        require_positive(self, "steps", "batch_size", "num_examples", "learning_rate")


@dataclass
class TaskConfig:
    """A task by registry name or file path, with its options (see ``latentrl tasks``)."""

    name: str = "arith"
    options: dict[str, Any] = field(default_factory=dict)
    """Passed to the task's loader, e.g. ``{steps: 2, max_value: 20}`` for arith."""
    chat_instruction: str | None = None
    """What chat prompts ask after the question, e.g. ``Reply with the number only.``
    (default: the task's own, which asks for worked steps and the final answer line)."""


@dataclass
class EvalConfig:
    """``latentrl eval``: accuracy of a model (with an optional plugin or adapter) on a task."""

    model: str
    """Main model: a local Hugging Face folder, a Hub id or a named model (``latentrl models``)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    split: str = "test"
    limit: int | None = None
    """Evaluate the first ``limit`` problems of the split (all when unset)."""
    chat_template: bool | None = None
    """Prompt through the model's chat template, the answer format stated in the user turn
    (default: when the model has one and no plugin is given; a plugin reads the task's
    plain prompt it was trained on)."""
    fewshot: int = 0
    """Worked examples before each question: the first ``fewshot`` rows of the train split."""
    n: int = 1
    """Samples per problem (pass@1 is averaged over them; maj@n votes over them)."""
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    plugin: str | None = None
    adapter: str | None = None
    output_dir: str | None = None
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        require_positive(self, "n", "limit", "max_tokens")
        require_non_negative(self, "temperature", "fewshot")
        require_model_references(self, "model")
        if self.plugin and self.chat_template:
            raise ValueError("chat_template: a latent plugin reads the task's plain prompt")


@dataclass
class InspectConfig:
    """``latentrl inspect``: what a plugin's latents say (see ``latentrl.inspection``)."""

    plugin: str | None = None
    """A DLR plugin folder; or give ``retriever``."""
    retriever: str | None = None
    """A LaSER retriever folder (``latentrl train laser``'s ``retriever/``)."""
    model: str | None = None
    """The plugin's main model (default: the one it was trained for)."""
    task: TaskConfig | None = None
    """Whose questions to read (default: the task of the run the folder was saved in)."""
    split: str = "test"
    limit: int = 12
    top_k: int = 5
    samples: int = 8
    """Sampled latents per question, for their spread around the mean."""
    seed: int = 0
    output_dir: str = "runs/inspect"

    def __post_init__(self) -> None:
        require_positive(self, "limit", "top_k", "samples")
        require_model_references(self, "model")
        if (self.plugin is None) == (self.retriever is None):
            raise ValueError("plugin: give exactly one of plugin (DLR) and retriever (LaSER)")


@dataclass
class ServeConfig:
    """``latentrl serve``: an OpenAI-compatible server for a frozen model with plugins."""

    model: str
    served_model_name: str | None = None
    """The main model's id in requests and ``/v1/models`` (default: ``model`` as given)."""
    plugins: dict[str, str] = field(default_factory=dict)
    """Plugin name -> folder."""
    prompt_template: str = "Question: {question}\nAnswer:"
    """How a question becomes the main model's prompt: the template of the task the plugins
    were trained on. Plugin assistants read the question inside it; chat turns use it when
    the tokenizer has no chat template."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    """When set, ``/v1/*`` requests need ``Authorization: Bearer <api_key>``."""
    max_tokens_limit: int = 4096
    max_prompt_tokens: int | None = None
    """Longest prompt accepted, in tokens (default: the model's context)."""
    max_body_bytes: int = 1_000_000
    async_engine: bool = True
    """With the vLLM backend, serve on vLLM's async engine: continuous batching, tokens
    streamed as they are generated. False, or another backend: a micro-batcher over the
    synchronous engine, which streams each completion once it is whole."""
    max_batch_prompts: int = 256
    """Micro-batcher: most prompts gathered into one engine call."""
    batch_wait_ms: float = 2.0
    """Micro-batcher: how long to wait for more requests once one arrives."""
    server_threads: int | None = 1
    """On the async engine, torch threads of the server process, which runs only the
    plugins' assistants (the engine computes in its own process): 1 keeps their threads
    from competing with the engine's for cores. None: torch's default."""
    request_timeout_s: float | None = None
    """A request still decoding after this long is aborted with a 504 (default: no limit)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        require_model_references(self, "model")
        if not 0 < self.port < 65536:
            raise ValueError("port: must be in 1..65535")
        require_positive(
            self, "max_tokens_limit", "max_prompt_tokens", "max_body_bytes", "max_batch_prompts",
            "request_timeout_s", "server_threads",
        )  # fmt: skip
        require_non_negative(self, "batch_wait_ms")
        if "{question}" not in self.prompt_template:
            raise ValueError(
                f"prompt_template: must contain {{question}}: {self.prompt_template!r}"
            )
        for name in self.plugins:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(
                    f"plugins: plugin name {name!r} must be letters, digits, '_' or '-'"
                )
        if (self.served_model_name or self.model) in self.plugins:
            raise ValueError("plugins: a plugin can't have the main model's name")


@dataclass
class LatentPluginSettings:
    """Shape of a DLR latent plugin (see ``latentrl.models.latent_plugin``)."""

    num_latents: int = 4
    """N: latent vectors per question."""
    latent_dim: int = 32
    """d_z: width of one latent vector."""
    projector: Literal["linear", "mlp", "none"] = "linear"
    """``none`` injects z as is, so latent_dim must equal the main model's hidden size."""
    projector_scale: float = 1.0
    """RMS of projected vectors relative to the main model's token embeddings."""
    init_log_std: float = -1.0
    log_std_min: float = -5.0
    log_std_max: float = 1.0
    use_markers: bool = True
    """Wrap the latents in <|latent_start|> ... <|latent_end|>."""
    latent_position: Literal["before_answer", "prefix"] = "before_answer"
    """Where the latents go: between the question and the answer cue (DESIGN.md), or in
    front of the whole prompt like a soft prompt. A small model that never saw anything
    between question and cue breaks there (tiny arith model: 15.8% -> 6.2%, markers
    alone 0%) but ignores a prefix of random vectors (15.2-15.6%): a no-op with an open
    channel, which is what RL needs to start from."""
    answer_cue: str = "Answer:"
    lora: bool = False
    """Train a LoRA adapter on the assistant instead of all its weights."""
    lora_rank: int = 16
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        require_positive(self, "num_latents", "latent_dim", "lora_rank", "projector_scale")
        if not self.log_std_min < self.init_log_std < self.log_std_max:
            raise ValueError("init_log_std: must lie strictly between log_std_min and log_std_max")


@dataclass
class DLRConfig:
    """``latentrl train dlr``: latent-space contrastive RL with a frozen main model."""

    main_model: str | None = None
    """The frozen main model (folder, Hub id or named model). Required."""
    assistant_model: str | None = None
    """The assistant's base causal LM (default: a trainable copy of the main model)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    plugin: LatentPluginSettings = field(default_factory=LatentPluginSettings)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    steps: int = 200
    """RL steps (one batch of questions each)."""
    questions_per_step: int = 64
    group_size: int = 8
    """G: latent samples per question."""
    decode_k: int = 8
    """K: samples decoded per question, chosen by the value head (K = G decodes all)."""
    explore: int = 0
    """Of the K decoded, how many are drawn at random instead of by predicted value."""
    ppo_epochs: int = 2
    """Optimisation passes over each batch."""
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    """Closed-form KL to the initial policy (0 disables it and the reference copy)."""
    entropy_coef: float = 0.0
    advantage: Literal["grpo", "rloo"] = "grpo"
    normalize_std: bool = True
    learning_rate: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimiser step: each process's questions are split into this many
    and accelerate accumulates their gradients (memory for a large assistant). The
    contrastive term's negatives then come from one micro-batch at a time."""

    contrastive: Literal["none", "reward_infonce", "mv_infonce", "mv_dhel"] = "reward_infonce"
    contrastive_weight: float = 0.05
    contrastive_tau: float = 0.2
    contrastive_views: int = 2
    """R: views per question for the multi-view estimators."""
    value_coef: float = 1.0
    """Weight of the value head's regression loss (it only reads detached inputs)."""
    correctness_weight: float = 1.0
    format_weight: float = 0.2
    likelihood_weight: float = 0.0
    """Weight of the dense reward: the frozen main model's mean per-token probability of
    the gold solution given the sampled latent (teacher-forced, one forward pass, no
    generation), minus the same at the policy's mean latent. Almost never tied inside a
    group, so groups whose decodes all agree still get an advantage (0 disables it)."""
    decode_max_tokens: int = 16
    decode_temperature: float = 0.0
    """Main model's decoding; 0 = greedy, so a latent's reward is a function of the latent."""

    warm_start_steps: int = 0
    """Supervised steps through the frozen main model before RL (0 skips the warm start)."""
    warm_start_batch_size: int = 32
    warm_start_learning_rate: float = 3e-4
    warm_start_reset_std: bool = True
    """After the warm start, reset the latents' std to ``plugin.init_log_std`` (the mean is
    kept). The warm start's cross-entropy shrinks the std (demo: to 0.07), and then nearly
    every group decodes G identical answers: no advantage for RL to learn from."""

    eval_problems: int = 500
    """Held-out problems for the before/after evaluation."""
    eval_every: int = 0
    """Evaluate (and keep the best plugin) every N steps; 0 = only at the end."""
    checkpoint_every: int = 50
    output_dir: str = "runs/dlr"
    seed: int = 0
    mixed_precision: Literal["none", "bf16", "fp16"] = "none"
    """Through accelerate ("none" rather than its "no", which YAML reads as false)."""
    report_to: list[str] = field(default_factory=list)
    """Extra trackers through accelerate: tensorboard, wandb, trackio."""

    def __post_init__(self) -> None:
        require_model_references(self, "main_model", "assistant_model")
        require_positive(
            self, "steps", "questions_per_step", "group_size", "decode_k", "ppo_epochs",
            "decode_max_tokens", "eval_problems", "warm_start_batch_size", "clip_eps",
            "learning_rate", "contrastive_tau", "max_grad_norm", "warm_start_learning_rate",
            "gradient_accumulation_steps",
        )  # fmt: skip
        require_non_negative(
            self, "kl_coef", "entropy_coef", "contrastive_weight", "value_coef",
            "correctness_weight", "format_weight", "likelihood_weight", "weight_decay",
            "warm_start_steps", "warmup_steps", "eval_every", "checkpoint_every",
            "decode_temperature",
        )  # fmt: skip
        if self.decode_k > self.group_size:
            raise ValueError(
                f"decode_k: K = {self.decode_k} exceeds group_size G = {self.group_size} "
                "(can't decode more samples than are drawn)"
            )
        if not 0 <= self.explore <= self.decode_k:
            raise ValueError("explore: must be between 0 and decode_k")
        if self.contrastive in ("mv_infonce", "mv_dhel"):
            if self.contrastive_views < 2:
                raise ValueError("contrastive_views: the multi-view estimators need at least 2")
            if self.contrastive_views > self.decode_k:
                raise ValueError(
                    "contrastive_views: can't exceed decode_k (views are decoded latents)"
                )


@dataclass
class GRPOTrainConfig:
    """``latentrl train grpo``: token-level GRPO with TRL, training a LoRA "reasoning adapter".

    The token-level baseline for DLR: the main model's own LoRA adapter is trained by
    TRL's ``GRPOTrainer`` on the same tasks and rewards.
    """

    model: str | None = None
    """The main model (folder, Hub id or named model). Required."""
    task: TaskConfig = field(default_factory=TaskConfig)
    rewards: list[str] = field(default_factory=lambda: ["correctness", "format"])
    """Reward functions from ``latentrl.rewards`` (summed by TRL, weights below)."""
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 0.2])
    steps: int = 200
    questions_per_step: int = 16
    num_generations: int = 8
    max_completion_length: int = 64
    temperature: float = 1.0
    learning_rate: float = 5e-4
    beta: float = 0.0
    """KL coefficient to the reference model (TRL's default 0)."""
    lora_rank: int = 16
    lora_alpha: int = 32
    use_vllm: bool = False
    """Generate with TRL's colocated vLLM instead of transformers."""
    chat_template: bool | None = None
    """Prompt through the model's chat template (default: when the model has one)."""
    output_dir: str = "runs/grpo"
    seed: int = 0
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_model_references(self, "model")
        require_positive(self, "steps", "questions_per_step", "num_generations", "max_completion_length",
                         "learning_rate", "lora_rank", "temperature")  # fmt: skip
        require_non_negative(self, "beta")
        if self.num_generations < 2:
            raise ValueError("num_generations: GRPO needs at least 2 completions per prompt")
        if len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights: {len(self.reward_weights)} weights for {len(self.rewards)} rewards"
            )
        if any(w < 0 for w in self.reward_weights):
            raise ValueError("reward_weights: must be >= 0")


@dataclass
class DemoConfig:
    """``latentrl demo`` / ``make demo``: DLR end to end on a tiny main model built here."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    dlr_config: str = "configs/dlr_arith_tiny.yaml"
    """The DLR recipe trained on the frozen tiny model (its task, rollout, held-out
    problems and output folder are the demo's)."""
    dlr_overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides of the recipe, as on the ``train dlr`` command line."""
    eval_problems: int = 500
    """Held-out problems decoded and scored before and after training."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """The recipe's seeds: one plugin is trained per seed (in ``output_dir/seed-S``) for the
    same frozen main model, and the table shows each seed with the mean and range."""
    output_dir: str = "runs/demo"
    cache_dir: str | None = None
    """Where pre-trained tiny models are cached (default ``~/.cache/latentrl``)."""

    def __post_init__(self) -> None:
        require_positive(self, "eval_problems")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected one or more distinct seeds, got {self.seeds}")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """Build ``cls`` from a YAML file and ``key.sub=value`` overrides (applied in order).

    Override values are parsed as YAML scalars (``lr=1e-4`` is a float, ``name=arith`` a
    string, ``urls=[a, b]`` a list). Raises :class:`ConfigError` naming the key and source.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_label = str(path) if path is not None else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        values = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        _set_dotted(values, key, _parse_scalar(raw), item)
        sources[key] = "the command line"
    return _build(cls, values, prefix="", sources=sources, file_label=file_label)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config (for saving next to a run's outputs)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _set_dotted(values: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    node = values
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {item!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _source(key: str, sources: Mapping[str, str], file_label: str) -> str:
    # An override of a section (`task={...}`) is the source of every key under it, and
    # one of a key under a section (`a.b=1`) is the source of the section it created.
    if any(source.startswith(key + ".") for source in sources):
        return "the command line"
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in sources:
            return sources[prefix]
    return file_label


def _build(
    cls: type[C],
    values: Any,
    prefix: str,
    sources: Mapping[str, str],
    file_label: str,
    defaults: Any = None,
) -> C:
    """``cls`` from a section's ``values``; keys not given take ``defaults``' values (the
    section's own default, e.g. CoCoVa's task is shapes_vqa) or else the class defaults."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(values, Mapping):
        src = _source(where, sources, file_label)
        raise ConfigError(f"{where}: expected a section (mapping), got {values!r} (in {src})")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            src = _source(prefix + str(key), sources, file_label)
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{prefix}{key}' (in {src}); known keys: {known}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name in values:
            default = _section_default(f, defaults, hints[name])
            kwargs[name] = _coerce(hints[name], values[name], key, sources, file_label, default)
        elif defaults is not None:
            kwargs[name] = getattr(defaults, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}' (in {file_label})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        field_name = message.split(":", 1)[0]
        key = prefix + field_name if field_name in fields else where
        src = _source(key, sources, file_label)
        raise ConfigError(f"{prefix}{message} (in {src})") from None


def _section_default(f: dataclasses.Field, defaults: Any, tp: Any) -> Any:
    """The instance a partly given section of field ``f`` is completed from, if any."""
    if defaults is not None:
        default = getattr(defaults, f.name)
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = f.default
    return default if dataclasses.is_dataclass(default) and not isinstance(default, type) else None


def _coerce(
    tp: Any,
    value: Any,
    key: str,
    sources: Mapping[str, str],
    file_label: str,
    default: Any = None,
) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", sources, file_label, default)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                fits = dataclasses.is_dataclass(option) and isinstance(default, option)
                section_default = default if fits else None
                return _coerce(option, value, key, sources, file_label, section_default)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise _type_error(key, f"one of {allowed}", value, sources, file_label)
        return value
    if origin in (list, tuple, Sequence, typing.Sequence):
        if not isinstance(value, list | tuple):
            raise _type_error(key, "a list", value, sources, file_label)
        (item_type, *_) = get_args(tp) or (Any,)
        items = [
            _coerce(item_type, v, f"{key}[{i}]", sources, file_label) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(key, "a mapping", value, sources, file_label)
        _, value_type = get_args(tp) or (str, Any)
        return {
            str(k): _coerce(value_type, v, f"{key}.{k}", sources, file_label)
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value, sources, file_label)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, "an integer", value, sources, file_label)
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value):
            # YAML 1.1 reads `1e-4` (no dot) as a string; everyone means the number.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(key, "a number", value, sources, file_label)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(key, "a string", value, sources, file_label)
        return value
    raise TypeError(f"{key}: unsupported config type {tp!r}")


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_error(
    key: str, expected: str, value: Any, sources: Mapping[str, str], file_label: str
) -> ConfigError:
    src = _source(key, sources, file_label)
    return ConfigError(f"{key}: expected {expected}, got {value!r} (in {src})")


# --------------------------------------------------------------------------------------
# LaSER (latent-reasoning dense retrieval)
# --------------------------------------------------------------------------------------


@dataclass
class RetrieverSettings:
    """Shape of a LaSER retriever (see ``latentrl.models.retriever``)."""

    latent_steps: int = 3
    """K: states averaged into a vector (the ``<EOS>`` state plus K - 1 soft tokens);
    1 is a plain last-token retriever."""
    latent_documents: bool = True
    """Encode documents with the K latent steps too (DESIGN.md); false: documents by their
    ``<EOS>`` state alone (K = 1), the queries still with K steps."""
    max_query_tokens: int = 256
    max_document_tokens: int = 512
    max_rationale_tokens: int = 256
    lora: bool = True
    """Train a LoRA adapter on the backbone instead of all its weights."""
    lora_rank: int = 64
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        require_positive(
            self, "latent_steps", "max_query_tokens", "max_document_tokens",
            "max_rationale_tokens", "lora_rank", "lora_alpha",
        )  # fmt: skip


@dataclass
class LaSERLossConfig:
    """Weights and temperatures of the LaSER objective (DESIGN.md, "LaSER")."""

    tau: float = 0.02
    """Temperature of both views' InfoNCE and of the distillation's score distributions."""
    latent_weight: float = 1.0
    explicit_weight: float = 1.0
    """InfoNCE of the explicit view (the teacher also learns to retrieve)."""
    distill_weight: float = 10.0
    """KL(p_explicit || p_latent) over the batch's documents, teacher detached."""
    trajectory_weight: float = 0.1
    trajectory_tau: float = 0.05
    distill_tau: float | None = None
    """Temperature of the distillation's two score distributions; unset: ``tau`` (the paper)."""

    def __post_init__(self) -> None:
        require_positive(self, "tau", "trajectory_tau", "distill_tau")
        require_non_negative(
            self, "latent_weight", "explicit_weight", "distill_weight", "trajectory_weight"
        )

    @property
    def needs_explicit_view(self) -> bool:
        """False for plain InfoNCE: no term reads the explicit view, so it is not computed."""
        return max(self.explicit_weight, self.distill_weight, self.trajectory_weight) > 0


@dataclass
class RationaleConfig:
    """Rationales generated with the rollout engine for datasets that have none."""

    model: str | None = None
    """The LLM that writes them (default: the retriever's backbone)."""
    prompt_template: str = "Question: {query}\nAnswer:"
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    cache_dir: str | None = None
    """Where generated rationales are cached as JSONL (default: ``$LATENTRL_CACHE/rationales``)."""

    def __post_init__(self) -> None:
        require_model_references(self, "model")
        require_positive(self, "max_tokens")
        require_non_negative(self, "temperature")
        if "{query}" not in self.prompt_template:
            raise ValueError(f"prompt_template: must contain {{query}}: {self.prompt_template!r}")


@dataclass
class LaSERConfig:
    """``latentrl train laser``: a dense retriever that thinks in soft tokens, distilled from
    explicit reasoning (or, with the explicit terms at 0 and ``latent_steps: 1``, plain InfoNCE)."""

    model: str | None = None
    """Backbone causal LM (folder, Hub id or named model); or leave unset and give ``tiny``."""
    tiny: TinyModelConfig | None = None
    """Build a tiny backbone instead, pre-trained as an LM on ``tiny_task`` (cached)."""
    tiny_pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    tiny_task: TaskConfig = field(default_factory=lambda: TaskConfig(name="gsm8k"))
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="gsm8k_retrieval"))
    """A retrieval task (``latentrl.tasks.retrieval``); trained on ``train``, scored on ``test``."""
    retriever: RetrieverSettings = field(default_factory=RetrieverSettings)
    loss: LaSERLossConfig = field(default_factory=LaSERLossConfig)
    rationale: RationaleConfig = field(default_factory=RationaleConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    steps: int = 300
    batch_size: int = 32
    """Queries per step (their positives are the in-batch documents)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimiser step: the step's queries are split into this many and
    accelerate accumulates their gradients (memory for a large backbone). Each query then
    scores against its micro-batch's documents only (its positives and hard negatives), so
    every loss term sees fewer in-batch negatives than one batch of ``batch_size``."""
    hard_negatives: int = 1
    """BM25-mined negatives per query, never a held-out query's document."""
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    encode_batch_size: int = 64
    """Documents per forward pass when encoding the corpus for evaluation."""
    checkpoint_every: int = 100
    output_dir: str = "runs/laser"
    seed: int = 0
    mixed_precision: Literal["none", "bf16", "fp16"] = "none"
    """Through accelerate ("none" rather than its "no", which YAML reads as false)."""
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.model is None) == (self.tiny is None):
            raise ValueError("model: give exactly one of model (a folder or Hub id) and tiny")
        require_model_references(self, "model")
        require_positive(
            self, "steps", "batch_size", "learning_rate", "max_grad_norm", "encode_batch_size",
            "gradient_accumulation_steps",
        )  # fmt: skip
        require_non_negative(
            self, "hard_negatives", "warmup_steps", "weight_decay", "checkpoint_every"
        )


@dataclass
class RetrievalEvalConfig:
    """``latentrl eval --task RETRIEVAL_TASK --retriever PATH``: ranking quality and latency."""

    retriever: str
    """A folder saved by ``latentrl train laser``."""
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="gsm8k_retrieval"))
    split: str = "test"
    limit: int | None = None
    """Score the first ``limit`` queries (all when unset); the corpus is always whole."""
    encode_batch_size: int = 64
    latency_queries: int = 32
    """Queries timed one at a time per view (0 skips the latency comparison)."""
    rationale: RationaleConfig = field(default_factory=RationaleConfig)
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(backend="hf"))
    """Engine that writes the explicit view's rationale in the latency comparison."""
    output_dir: str | None = None

    def __post_init__(self) -> None:
        require_positive(self, "limit", "encode_batch_size")
        require_non_negative(self, "latency_queries")
