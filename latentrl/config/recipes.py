"""One config per entry point: the recipes (``latentrl train dlr | grpo | cocova | laser``,
the demo) and the commands (eval, inspect, serve)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from latentrl.config.loader import (
    ConfigError,
    require_model_references,
    require_non_negative,
    require_positive,
)
from latentrl.config.sections import (
    LaSERLossConfig,
    LatentPluginSettings,
    LoopConfig,
    LQFormerSettings,
    PretrainConfig,
    RationaleConfig,
    RetrieverSettings,
    RolloutConfig,
    TaskConfig,
    TinyModelConfig,
    TinyViTConfig,
)


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
class DLRConfig:
    """``latentrl train dlr``: latent-space contrastive RL with a frozen main model."""

    main_model: str | None = None
    """The frozen main model (folder, Hub id or named model). Required."""
    assistant_model: str | None = None
    """The assistant's base causal LM (default: a trainable copy of the main model)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    plugin: LatentPluginSettings = field(default_factory=LatentPluginSettings)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    """RL steps (one batch of questions each), learning rate, ... (steps 200, lr 1e-4,
    constant, checkpoint every 50)."""

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
    output_dir: str = "runs/dlr"
    seed: int = 0

    def __post_init__(self) -> None:
        require_model_references(self, "main_model", "assistant_model")
        require_positive(
            self, "questions_per_step", "group_size", "decode_k", "ppo_epochs",
            "decode_max_tokens", "eval_problems", "warm_start_batch_size", "clip_eps",
            "contrastive_tau", "warm_start_learning_rate",
        )  # fmt: skip
        require_non_negative(
            self, "kl_coef", "entropy_coef", "contrastive_weight", "value_coef",
            "correctness_weight", "format_weight", "likelihood_weight",
            "warm_start_steps", "eval_every", "decode_temperature",
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
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            steps=300,
            learning_rate=1e-3,
            lr_schedule="cosine",
            warmup_steps=20,
            checkpoint_every=100,
        )  # fmt: skip
    )
    """Steps 300, lr 1e-3, cosine after 20 warm-up steps, checkpoint every 100. With
    gradient accumulation each query scores against its micro-batch's documents only."""

    batch_size: int = 32
    """Queries per step (their positives are the in-batch documents)."""
    hard_negatives: int = 1
    """BM25-mined negatives per query, never a held-out query's document."""
    encode_batch_size: int = 64
    """Documents per forward pass when encoding the corpus for evaluation."""
    output_dir: str = "runs/laser"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.model is None) == (self.tiny is None):
            raise ValueError("model: give exactly one of model (a folder or Hub id) and tiny")
        require_model_references(self, "model")
        require_positive(self, "batch_size", "encode_batch_size")
        require_non_negative(self, "hard_negatives")


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


@dataclass
class CoCoVaConfig:
    """``latentrl train cocova``: an LQ-Former's latent thoughts for a language model."""

    language_model: str | None = None
    """The language model (folder or Hub id); ``tiny``: a tiny model pre-trained on the
    task's text (``tiny_lm``, ``tiny_lm_pretrain``), built once and cached. Required."""
    vision_encoder: str | None = None
    """A ``transformers`` vision model folder (ViT, CLIP, SigLIP), frozen; ``tiny``: a tiny
    ViT pre-trained on ``shapes_vqa`` scenes (``tiny_vit``), cached. Required."""
    tiny_lm: TinyModelConfig = field(
        default_factory=lambda: TinyModelConfig(
            vocab_size=384, num_layers=2, max_position_embeddings=128
        )
    )
    tiny_lm_pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(steps=300, num_examples=20000)
    )
    tiny_lm_thought_rate: float = 0.0
    """``language_model: tiny``: fraction of its pre-training examples that show the row's
    worked thought in the latent slot (0: it never learns to read the slot)."""
    tiny_vit: TinyViTConfig = field(default_factory=TinyViTConfig)
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="shapes_vqa"))
    plugin: LQFormerSettings = field(default_factory=LQFormerSettings)
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(backend="hf"))
    lm_mode: Literal["frozen", "lora"] = "frozen"
    """``frozen``: gradients only reach the latent slot; ``lora``: also a LoRA adapter."""
    lora_rank: int = 8
    lora_alpha: int = 16

    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            steps=2000, learning_rate=1e-3, warmup_steps=50, checkpoint_every=500
        )
    )
    """Steps 2000, lr 1e-3, constant after 50 warm-up steps, checkpoint every 500. With
    gradient accumulation the answer loss stays the mean over all the step's answer tokens."""
    time_budget_s: float = 0.0
    """Stop after this many seconds of training (0: no limit), for equal-budget comparisons."""
    batch_size: int = 64
    """Rows a step, over all processes (each takes ``batch_size / processes``)."""
    gate_learning_rate: float = 1e-3
    """Learning rate of the LQ-Former's gate alpha (a single scalar, no weight decay).
    Measured on ``shapes_vqa``: at 0.05 the gate opens within a few hundred steps and
    accuracy drops; at the model's learning rate the block's update grows instead."""
    answer_weight: float = 1.0
    infonce_weight: float = 0.1
    """Both InfoNCE terms (thoughts vs image, thoughts vs question); 0 switches them off."""
    diffusion_weight: float = 0.1
    """Diffusion reconstruction of the visual features from the thoughts; 0 switches it off."""
    diffusion_timesteps: int = 1000

    train_examples: int = 20000
    eval_problems: int = 600
    eval_every: int = 0
    """Decode the held-out rows every N steps (0: only at the end)."""
    answer_cue: str = "Answer:"
    decode_max_tokens: int = 4
    output_dir: str = "runs/cocova"
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(
            self, "batch_size", "train_examples", "eval_problems", "decode_max_tokens",
            "lora_rank", "diffusion_timesteps", "gate_learning_rate",
        )  # fmt: skip
        require_non_negative(
            self, "time_budget_s", "answer_weight", "infonce_weight", "diffusion_weight",
            "eval_every",
        )  # fmt: skip
        if not 0.0 <= self.tiny_lm_thought_rate <= 1.0:
            raise ValueError("tiny_lm_thought_rate: must be in [0, 1]")
        micro_batches = self.loop.gradient_accumulation_steps
        if self.batch_size < 2 * micro_batches and self.infonce_weight > 0:
            raise ValueError(
                "batch_size: InfoNCE needs at least 2 rows a micro-batch "
                "(batch_size / loop.gradient_accumulation_steps; or infonce_weight=0)"
            )
