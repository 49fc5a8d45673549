"""The shared rollout engine: one interface, three backends.

>>> engine = make_engine("path/to/model", RolloutConfig(backend="hf"))  # doctest: +SKIP
>>> out = engine.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=8))  # doctest: +SKIP
>>> out[0].completions[0].text  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from latentrl.config import RolloutConfig
from latentrl.rollout.base import (
    Completion,
    Prompt,
    RequestOutput,
    RolloutEngine,
    RolloutError,
    SamplingParams,
)

BACKENDS = ("auto", "vllm", "vllm_server", "hf")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_engine(model: str | Path, cfg: RolloutConfig | None = None, **overrides) -> RolloutEngine:
    """The engine ``cfg.backend`` names (``auto``: in-process vLLM if installed, else hf)."""
    from latentrl.models.named import resolve_model

    model = resolve_model(model)
    cfg = cfg or RolloutConfig()
    backend = overrides.pop("backend", cfg.backend)
    if overrides:
        raise TypeError(f"make_engine: unexpected arguments {sorted(overrides)}")
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    if backend == "vllm":
        from latentrl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model, cfg)
    if backend == "vllm_server":
        from latentrl.rollout.server_engine import VLLMServerEngine

        return VLLMServerEngine(model, cfg)
    if backend == "hf":
        from latentrl.rollout.hf_engine import HFEngine

        return HFEngine(model, cfg)
    raise RolloutError(f"unknown rollout backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Completion",
    "Prompt",
    "RequestOutput",
    "RolloutEngine",
    "RolloutError",
    "SamplingParams",
    "make_engine",
    "vllm_available",
]
