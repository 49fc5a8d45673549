"""Config sections shared by several recipes, and the settings saved with a trained
plugin or retriever (so a checkpoint reloads with the shape it was trained with)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from latentrl.config.loader import require_model_references, require_non_negative, require_positive


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
class LoopConfig:
    """A training recipe's loop (``loop:`` in DLR's, CoCoVa's and LaSER's configs; each
    recipe has its own defaults)."""

    steps: int = 200
    """Optimiser steps."""
    learning_rate: float = 1e-4
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """The learning rate after ``warmup_steps`` of linear warm-up from 0
    (``transformers.get_scheduler``)."""
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimiser step: a step's batch is split into this many and
    accelerate accumulates their gradients (memory for a large model). In-batch negatives
    (DLR's contrastive term, CoCoVa's InfoNCE, LaSER's documents) then come from one
    micro-batch at a time."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every N steps (0: never); the last two are kept."""
    mixed_precision: Literal["none", "bf16", "fp16"] = "none"
    """Through accelerate ("none" rather than its "no", which YAML reads as false)."""
    report_to: list[str] = field(default_factory=list)
    """Extra trackers through accelerate: tensorboard, wandb, trackio."""

    def __post_init__(self) -> None:
        require_positive(
            self, "steps", "learning_rate", "max_grad_norm", "gradient_accumulation_steps"
        )
        require_non_negative(self, "warmup_steps", "weight_decay", "checkpoint_every")


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
class LQFormerSettings:
    """Shape of a CoCoVa plugin (LQ-Former, projector, auxiliary heads)."""

    architecture: Literal["lqformer", "llava"] = "lqformer"
    """``llava``: no latent thoughts, visual tokens projected straight into the LM (baseline)."""
    num_queries: int = 8
    """M: latent thought vectors handed to the language model."""
    width: int = 128
    num_heads: int = 4
    iterations: int = 3
    """K: refinement steps."""
    attention_sink: bool = True
    """A learned null key and value in the cross-attention (see the module docstring)."""
    position_codes: bool = True
    """Add 2-D sine-cosine codes of row and column to the visual tokens (square grids)."""
    token_selection: bool = True
    keep_fraction: float = 0.75
    """Fraction of the current visual tokens kept for the next step (at least one)."""
    early_stop: float = 0.0
    """Evaluation: stop a question's refinement when its update norm is at most this
    fraction of its thought norm (0 disables early stopping)."""
    projector: Literal["linear", "mlp"] = "linear"
    contrast_dim: int = 64
    """Width of the shared space of the InfoNCE terms."""
    denoiser_width: int = 128

    def __post_init__(self) -> None:
        require_positive(
            self, "num_queries", "width", "num_heads", "iterations", "contrast_dim",
            "denoiser_width",
        )  # fmt: skip
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError("keep_fraction: must be in (0, 1]")
        if self.early_stop < 0:
            raise ValueError("early_stop: must be >= 0")
        if self.width % self.num_heads:
            raise ValueError("num_heads: must divide width")
        if self.position_codes and self.width % 4:
            raise ValueError("width: position_codes need a multiple of 4")


@dataclass
class TinyViTConfig:
    """A tiny ViT for ``shapes_vqa`` and its per-patch attribute pre-training."""

    image_size: int = 32
    patch_size: int = 8
    """Equal to the scene's grid cell, so one patch sees one whole object."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    pretrain_steps: int = 300
    pretrain_batch_size: int = 64
    pretrain_examples: int = 4000
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(
            self, "image_size", "patch_size", "hidden_size", "num_layers", "num_heads",
            "pretrain_steps", "pretrain_batch_size", "pretrain_examples", "learning_rate",
        )  # fmt: skip
        if self.image_size % self.patch_size:
            raise ValueError("patch_size: must divide image_size")
