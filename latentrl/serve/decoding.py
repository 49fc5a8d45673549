"""How the server decodes a request: two decoders behind one interface.

- :class:`StreamingDecoder` (the vLLM backend, by default): vLLM's async engine. Each
  prompt of a request is one engine request, scheduled continuously beside every other
  one, and its tokens are yielded as the engine produces them.
- :class:`BatchedDecoder` (transformers or a remote vLLM server, or ``async_engine=false``):
  the micro-batcher over the synchronous rollout engine
  (:mod:`latentrl.serve.batcher`). A request's text exists once its whole batch is
  decoded, so its stream is that text cut into about one piece per token.

Both give a plugin's requests their ``prompt_embeds`` the same way: concurrent requests
for one plugin share a pass of its assistant (:class:`LatentBatcher`), which runs on a
worker thread so the event loop keeps answering. Both yield :class:`CompletionDelta`s
with choices numbered as OpenAI numbers them: prompt by prompt, the ``n`` samples of each.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from latentrl.config import ServeConfig
from latentrl.models.latent_plugin import LatentPlugin
from latentrl.rollout import (
    Completion,
    Prompt,
    RolloutEngine,
    SamplingParams,
    make_engine,
    vllm_available,
)
from latentrl.rollout.base import CompletionDelta, EngineModel
from latentrl.serve.batcher import MicroBatcher

if TYPE_CHECKING:  # vLLM is optional
    from latentrl.rollout.async_vllm_engine import AsyncVLLMEngine

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One HTTP request's prompts and how to decode them."""

    request_id: str
    params: SamplingParams
    prompts: list[Prompt]
    """Token ids; for a plugin, replaced by its ``prompt_embeds`` before decoding."""
    plugin: LatentPlugin | None = None
    rows: list[dict] = field(default_factory=list)
    """For a plugin: ``{"question", "prompt"}`` per prompt (the assistant reads the question)."""


class LatentBatcher:
    """Plugin requests' ``prompt_embeds``, one assistant pass per plugin for all the
    requests that arrived while the previous pass ran."""

    def __init__(
        self,
        embed_tokens: Callable[[], nn.Module],
        tokenizer,
        observe_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.embed_tokens = embed_tokens
        """The main model's input embeddings (loaded on first use)."""
        self.tokenizer = tokenizer
        self.observe_batch = observe_batch
        self._waiting: list[tuple[LatentPlugin, list[dict], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    async def prompts(self, plugin: LatentPlugin, rows: list[dict]) -> list[torch.Tensor]:
        """The main model's ``prompt_embeds`` for ``rows``, carrying ``plugin``'s latents
        (``LatentPlugin.mean_latent_prompts``, the code path ``latentrl eval`` decodes with)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((plugin, rows, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def _work(self) -> None:
        while self._waiting:
            waiting, self._waiting = self._waiting, []
            by_plugin: dict[int, list[tuple[LatentPlugin, list[dict], asyncio.Future]]] = {}
            for item in waiting:
                by_plugin.setdefault(id(item[0]), []).append(item)
            for group in by_plugin.values():
                await self._run(group)

    async def _run(self, group: list[tuple[LatentPlugin, list[dict], asyncio.Future]]) -> None:
        plugin = group[0][0]
        rows = [row for _, request_rows, _ in group for row in request_rows]
        self.observe_batch(len(rows))
        try:
            prompts = await asyncio.to_thread(
                lambda: plugin.mean_latent_prompts(self.embed_tokens(), self.tokenizer, rows)
            )
        except Exception as err:  # a broken plugin fails its own requests, not the server
            log.exception("plugin failed to produce latents")
            for _, _, future in group:
                if not future.done():
                    future.set_exception(err)
            return
        for _, request_rows, future in group:
            mine, prompts = prompts[: len(request_rows)], prompts[len(request_rows) :]
            if not future.done():  # else the client went away meanwhile
                future.set_result(mine)


class Decoder(abc.ABC):
    """Decodes jobs on one engine; :meth:`decode` from any coroutine of the server's loop."""

    engine: EngineModel

    def __init__(self, latents: LatentBatcher) -> None:
        self.latents = latents

    async def start(self) -> None:
        """Start what must run inside the server's event loop."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def unfinished_requests(self) -> int:
        """Requests the engine still holds, waiting or decoding."""

    async def prepare(self, job: Job) -> list[Prompt]:
        """``job``'s prompts checked against the model, a plugin's latents computed first;
        the prompts are also stored on the job. Raises ``RolloutError``."""
        if job.plugin is not None:
            job.prompts = await self.latents.prompts(job.plugin, job.rows)
        job.prompts = [
            self.engine.check_prompt(i, p, job.params) for i, p in enumerate(job.prompts)
        ]
        return job.prompts

    @abc.abstractmethod
    def decode(self, job: Job, incremental: bool) -> AsyncIterator[CompletionDelta]:
        """The job's text as it is generated (``incremental``: in small pieces where the
        backend only has whole completions). Raises ``RolloutError`` before the first delta
        for a request the engine refuses."""


class StreamingDecoder(Decoder):
    """Each prompt an engine request of vLLM's async engine; tokens as they come."""

    def __init__(self, engine: AsyncVLLMEngine, latents: LatentBatcher) -> None:
        super().__init__(latents)
        self.engine = engine

    async def start(self) -> None:
        await self.engine.start()

    def close(self) -> None:
        self.engine.close()

    def unfinished_requests(self) -> int:
        return self.engine.unfinished_requests()

    async def decode(self, job: Job, incremental: bool) -> AsyncIterator[CompletionDelta]:
        prompts = await self.prepare(job)
        n = job.params.n
        streams = [
            self.engine.stream(prompt, job.params, f"{job.request_id}-{i}", incremental)
            for i, prompt in enumerate(prompts)
        ]
        async with aclosing(merged(streams)) as outputs:
            async for prompt_index, deltas in outputs:
                for delta in deltas:
                    yield replace(delta, index=prompt_index * n + delta.index)


class BatchedDecoder(Decoder):
    """The micro-batcher over the synchronous rollout engine; whole completions."""

    def __init__(
        self, engine: RolloutEngine, cfg: ServeConfig, latents: LatentBatcher,
        observe_batch: Callable[[int], None],
    ) -> None:  # fmt: skip
        super().__init__(latents)
        self.engine = engine
        self.batcher = MicroBatcher(
            self.engine,
            max_batch_prompts=cfg.max_batch_prompts,
            wait_s=cfg.batch_wait_ms / 1000,
            observe_batch=observe_batch,
        )

    def close(self) -> None:
        self.batcher.close()
        self.engine.close()

    def unfinished_requests(self) -> int:
        return self.batcher.unfinished_requests()

    async def decode(self, job: Job, incremental: bool) -> AsyncIterator[CompletionDelta]:
        outputs = await self.batcher.submit(await self.prepare(job), job.params)
        completions = [c for output in outputs for c in output.completions]
        for index, completion in enumerate(completions):
            pieces = text_pieces(self.latents.tokenizer, completion) if incremental else []
            for piece in pieces[:-1]:
                yield CompletionDelta(index, piece, [])
                await asyncio.sleep(0)  # let other requests' streams interleave
            last = pieces[-1] if pieces else completion.text
            yield CompletionDelta(index, last, completion.token_ids, completion.finish_reason)


def make_decoder(
    model: str, cfg: ServeConfig, latents: LatentBatcher, observe_batch: Callable[[int], None]
) -> Decoder:
    """vLLM's async engine for the vLLM backend (unless ``cfg.async_engine`` is off), else
    the micro-batcher over the backend ``cfg.rollout.backend`` names."""
    backend = cfg.rollout.backend
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    if backend == "vllm" and cfg.async_engine:
        from latentrl.rollout.async_vllm_engine import AsyncVLLMEngine

        if cfg.server_threads is not None:
            torch.set_num_threads(cfg.server_threads)
        return StreamingDecoder(AsyncVLLMEngine(model, cfg.rollout), latents)
    engine = make_engine(model, cfg.rollout, backend=backend)
    return BatchedDecoder(engine, cfg, latents, observe_batch)


async def merged(streams: Sequence[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Items of several async iterators as each arrives, with the index of its iterator.

    Leaving early (the consumer closes this generator, or is cancelled) cancels every
    iterator still running, which for an engine stream aborts its request.
    """
    if len(streams) == 1:  # the common case, without tasks
        async with aclosing(streams[0]) as stream:
            async for item in stream:
                yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
        except Exception as err:
            await queue.put((index, err))
        finally:
            await queue.put((index, done))

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    running = len(tasks)
    try:
        while running:
            index, item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def text_pieces(tokenizer, completion: Completion) -> list[str]:
    """``completion.text`` cut into about one piece per generated token, for streaming.

    Tokens are decoded incrementally over a short window, as vLLM's detokenizer does
    (linear in the length, not quadratic): a token that ends inside a multi-byte character
    adds nothing until the character is complete. The pieces are slices of
    ``completion.text`` itself, so they always join to exactly it, stop strings cut.
    """
    text, ids = completion.text, completion.token_ids
    pieces: list[str] = []
    streamed = 0  # characters of the decoded output seen so far
    sent = 0  # characters of ``text`` sent
    prefix, read = 0, 0  # the window: ids[prefix:read] are decoded, ids[read:] are new
    for end in range(1, len(ids) + 1):
        before = tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = tokenizer.decode(ids[prefix:end], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            continue  # nothing new yet, or an incomplete character
        streamed += len(after) - len(before)
        prefix, read = read, end
        if min(streamed, len(text)) > sent:
            pieces.append(text[sent : min(streamed, len(text))])
            sent = min(streamed, len(text))
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces
