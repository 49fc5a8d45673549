"""The rollout engine's interface: what every backend takes and returns.

An engine knows token ids and embeddings, never tasks, rewards or training. A prompt is
either a list of token ids or a 2-D ``prompt_embeds`` tensor ``[L, hidden_size]`` (the
main model's input embeddings, e.g. a prefix with injected latent vectors). Requests are
checked here, once, for every backend, so a bad request fails with one clear
:class:`RolloutError` before anything reaches the model and later requests are unaffected.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

Prompt = list[int] | torch.Tensor
"""Token ids, or a ``[L, hidden_size]`` tensor of input embeddings."""


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def prompt_length(prompt: Prompt) -> int:
    """Number of positions a prompt occupies."""
    return prompt.shape[0] if isinstance(prompt, torch.Tensor) else len(prompt)


class RolloutError(ValueError):
    """A request the engine cannot serve (bad prompt or sampling parameters, dead server)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions; mirrors vLLM's ``SamplingParams`` for the shared subset."""

    n: int = 1
    """Completions per prompt."""
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    """Stop strings: the text ends before the first one (it is not included)."""
    seed: int | None = None
    """Per-request seed: the same seed gives the same samples on the same backend."""
    logprobs: bool = False
    """Return the log-probability of each generated token (raw model distribution)."""
    ignore_eos: bool = False
    """Keep generating past EOS until ``max_tokens`` (vLLM's option; for load tests)."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.n <= 0:
            raise RolloutError(f"n must be >= 1, got {self.n}")
        if self.max_tokens <= 0:
            raise RolloutError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise RolloutError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise RolloutError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise RolloutError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if any(not s for s in self.stop):
            raise RolloutError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


FinishReason = Literal["stop", "length"]


@dataclass
class Completion:
    """One sampled continuation of a prompt."""

    token_ids: list[int]
    """Generated ids, including the EOS token or the token that completed a stop string."""
    text: str
    """Decoded text without special tokens, cut before a stop string."""
    finish_reason: FinishReason
    """``stop`` (EOS or a stop string) or ``length`` (``max_tokens`` reached)."""
    logprobs: list[float] | None = None
    """Log-probability of each generated token, when requested."""


@dataclass
class RequestOutput:
    """The ``n`` completions of one prompt, in the order of the prompts given."""

    prompt_len: int
    completions: list[Completion] = field(default_factory=list)


@dataclass
class CompletionDelta:
    """What one choice of a streamed request generated since the last delta."""

    index: int
    """The choice, among the request's ``n``."""
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    """Set on the choice's last delta."""


class EngineModel:
    """What a decoding engine's model accepts, and the check of one prompt against it."""

    backend: str
    hidden_size: int
    vocab_size: int
    max_model_len: int
    embed_dtype: torch.dtype
    """The dtype ``prompt_embeds`` are cast to (floating inputs only)."""

    def check_prompt(self, index: int, prompt: Prompt, params: SamplingParams) -> Prompt:
        """``prompt`` ready for the backend (embeddings on the CPU in ``embed_dtype``);
        raises :class:`RolloutError` naming prompt ``index`` and what is wrong."""
        where = f"prompt {index}"
        if isinstance(prompt, torch.Tensor):
            if prompt.dim() != 2:
                raise RolloutError(
                    f"{where}: prompt_embeds must be 2-D [length, hidden_size], "
                    f"got shape {tuple(prompt.shape)}"
                )
            if prompt.shape[1] != self.hidden_size:
                raise RolloutError(
                    f"{where}: prompt_embeds width {prompt.shape[1]} does not match the "
                    f"model's hidden_size {self.hidden_size}"
                )
            if not prompt.is_floating_point():
                raise RolloutError(
                    f"{where}: prompt_embeds must be a floating-point tensor, got {prompt.dtype}"
                )
            if not torch.isfinite(prompt).all():
                raise RolloutError(f"{where}: prompt_embeds contain NaN or infinite values")
            prompt = prompt.detach().to("cpu", self.embed_dtype).contiguous()
            length = prompt.shape[0]
        elif isinstance(prompt, Sequence) and not isinstance(prompt, str | bytes):
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                raise RolloutError(f"{where}: token prompts must be lists of ints")
            if prompt and not 0 <= min(prompt) <= max(prompt) < self.vocab_size:
                raise RolloutError(
                    f"{where}: token ids must be in [0, {self.vocab_size}), "
                    f"got {min(prompt)}..{max(prompt)}"
                )
            prompt = list(prompt)
            length = len(prompt)
        else:
            raise RolloutError(
                f"{where}: expected a list of token ids or a 2-D prompt_embeds tensor, "
                f"got {type(prompt).__name__}"
            )
        if length == 0:
            raise RolloutError(f"{where}: empty prompt")
        if length + params.max_tokens > self.max_model_len:
            raise RolloutError(
                f"{where}: prompt length {length} + max_tokens {params.max_tokens} exceeds "
                f"the model's context of {self.max_model_len} tokens"
            )
        return prompt


class RolloutEngine(EngineModel, abc.ABC):
    """Decodes batches of prompts. Backends: ``vllm``, ``vllm_server``, ``hf``."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[RequestOutput]:
        """Sample ``params.n`` completions for each prompt; raises :class:`RolloutError`."""
        if not isinstance(params, SamplingParams):
            raise RolloutError(f"params must be a SamplingParams, got {type(params).__name__}")
        checked = [self.check_prompt(i, prompt, params) for i, prompt in enumerate(prompts)]
        if not checked:
            return []
        return self._generate(checked, params)

    @abc.abstractmethod
    def _generate(self, prompts: list[Prompt], params: SamplingParams) -> list[RequestOutput]:
        """Backend-specific decoding of already validated prompts."""

    def update_weights(self, weights: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        """Load new weights into the decoding model (a model or a state dict)."""
        raise NotImplementedError(f"the {self.backend} backend cannot update weights")

    def sleep(self) -> None:
        """Free accelerator memory between rollouts (no-op where unsupported)."""

    def wake_up(self) -> None:
        """Undo :meth:`sleep`."""

    def close(self) -> None:
        """Release the engine's resources."""

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
