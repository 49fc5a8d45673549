"""vLLM's async engine (``AsyncLLM``), for serving: continuous batching and token streaming.

Trainers decode with the in-process ``vllm.LLM`` (:mod:`latentrl.rollout.vllm_engine`): a
list of prompts in, finished completions out. A server needs the engine vLLM's own OpenAI
server runs on instead: its scheduler and model run in an engine-core process, each
request joins the running batch as soon as it arrives (a short request is not held behind
a long one), and each request's tokens come back as they are generated.

The engine's output handler is an asyncio task, so :meth:`AsyncVLLMEngine.start` is called
inside the event loop that will use it; the constructor only reads the configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import torch

from latentrl.config import RolloutConfig
from latentrl.rollout.base import (
    TORCH_DTYPES,
    CompletionDelta,
    EngineModel,
    Prompt,
    RolloutError,
    SamplingParams,
)
from latentrl.rollout.vllm_engine import to_vllm_sampling_params, vllm_engine_arguments


class AsyncVLLMEngine(EngineModel):
    """Streams each request's tokens from vLLM's ``AsyncLLM``."""

    backend = "vllm"

    def __init__(self, model: str | Path, cfg: RolloutConfig | None = None) -> None:
        cfg = cfg or RolloutConfig(backend="vllm")
        from vllm import AsyncEngineArgs

        arguments = vllm_engine_arguments(model, cfg)
        self._vllm_config = AsyncEngineArgs(
            **arguments, disable_log_stats=True
        ).create_engine_config()
        model_config = self._vllm_config.model_config
        self.hidden_size = model_config.get_hidden_size()
        self.vocab_size = model_config.get_vocab_size()
        self.max_model_len = model_config.max_model_len
        self.embed_dtype = TORCH_DTYPES[cfg.dtype]
        self._llm = None

    async def start(self) -> None:
        """Start the engine-core process (about as long as ``vllm.LLM`` takes to load)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        self._llm = AsyncLLM.from_vllm_config(self._vllm_config, disable_log_stats=True)

    async def stream(
        self, prompt: Prompt, params: SamplingParams, request_id: str, incremental: bool = True
    ) -> AsyncIterator[list[CompletionDelta]]:
        """Decode one prompt checked by :meth:`check_prompt`; yields, as the engine produces
        them, what each of its ``params.n`` choices added (not ``incremental``: once, at the
        end, which spares a step-by-step round trip). Closing the iterator before the end (a
        client went away) aborts the request in the engine."""
        if self._llm is None:
            raise RolloutError("the async vLLM engine has not been started")
        inputs = (
            {"prompt_embeds": prompt}
            if isinstance(prompt, torch.Tensor)
            else {"prompt_token_ids": prompt}
        )
        sampling = to_vllm_sampling_params(params, stream=incremental)
        try:
            async for output in self._llm.generate(inputs, sampling, request_id):
                yield [
                    CompletionDelta(
                        index=choice.index,
                        text=choice.text,
                        token_ids=list(choice.token_ids),
                        finish_reason=_finish_reason(choice.finish_reason),
                    )
                    for choice in output.outputs
                ]
        except ValueError as err:  # vLLM's refusal of a request (its checks beyond ours)
            raise RolloutError(str(err)) from err

    def unfinished_requests(self) -> int:
        """Requests the engine holds, waiting or decoding (each of ``n`` samples counts)."""
        return 0 if self._llm is None else self._llm.get_num_unfinished_requests()

    def close(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None


def _finish_reason(reason: str | None) -> str | None:
    """vLLM's reason as latentrl's: ``length``, ``stop`` (EOS or a stop string), or None
    while the choice goes on."""
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
