"""Micro-batching: concurrent requests gathered into one call of the synchronous engine.

The rollout engine decodes a list of prompts at once but blocks while it does, so one
worker thread owns it. Requests queue up from the event loop; the worker takes the
first, waits ``wait_s`` for more (everything that arrived while the previous batch was
decoding is already there), then:

1. for each plugin in the batch, runs its assistant once over all its questions
   (``LatentPlugin.mean_latent_prompts``, the code path ``latentrl eval`` decodes with),
   turning those requests into ``prompt_embeds`` prompts;
2. calls ``engine.generate`` once per distinct set of sampling parameters (the engine
   takes one set per call), so requests with the same settings share a batch.

A request the engine refuses (e.g. prompt plus ``max_tokens`` longer than the context)
would fail its whole batch, so a failed batch is retried request by request and only
the bad one gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from latentrl.models.latent_plugin import LatentPlugin
from latentrl.rollout import Prompt, RequestOutput, RolloutEngine, RolloutError, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One HTTP request's prompts and how to decode them."""

    prompts: list[Prompt]
    """Token ids for the main model alone; filled with ``prompt_embeds`` for a plugin."""
    params: SamplingParams
    plugin: LatentPlugin | None = None
    rows: list[dict] = field(default_factory=list)
    """For a plugin: ``{"question", "prompt"}`` per prompt (the assistant reads the question)."""


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def settle(self, result: list[RequestOutput] | None, error: BaseException | None) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class MicroBatcher:
    """Owns the engine on one worker thread; :meth:`submit` from any coroutine."""

    def __init__(
        self,
        engine: RolloutEngine,
        tokenizer,
        embed_tokens: Callable[[], nn.Module],
        max_batch_prompts: int = 256,
        wait_s: float = 0.002,
        observe_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.embed_tokens = embed_tokens
        """The main model's input embeddings (loaded on first use by a plugin)."""
        self.max_batch_prompts = max_batch_prompts
        self.wait_s = wait_s
        self.observe_batch = observe_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="latentrl-batcher", daemon=True)
        self._thread.start()

    async def submit(self, job: Job) -> list[RequestOutput]:
        """Decode ``job``; one ``RequestOutput`` per prompt. Raises ``RolloutError``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(job, future, loop))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    # ---- the worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            stopping = False
            deadline = time.monotonic() + self.wait_s
            while sum(len(p.job.prompts) for p in batch) < self.max_batch_prompts:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)
            if stopping:
                return

    def _run(self, batch: list[_Pending]) -> None:
        ready = [pending for pending in batch if pending.job.plugin is None]
        by_plugin: dict[int, list[_Pending]] = {}
        for pending in batch:
            if pending.job.plugin is not None:
                by_plugin.setdefault(id(pending.job.plugin), []).append(pending)
        for group in by_plugin.values():
            if self._attach_latents(group):
                ready += group
        by_params: dict[SamplingParams, list[_Pending]] = {}
        for pending in ready:
            by_params.setdefault(pending.job.params, []).append(pending)
        for params, group in by_params.items():
            self._decode(group, params)

    def _attach_latents(self, group: list[_Pending]) -> bool:
        """Give one plugin's jobs their ``prompt_embeds`` in one pass of its assistant."""
        plugin = group[0].job.plugin
        rows = [row for pending in group for row in pending.job.rows]
        try:
            prompts = plugin.mean_latent_prompts(self.embed_tokens(), self.tokenizer, rows)
        except Exception as err:  # a broken plugin fails its own requests, not the server
            log.exception("plugin failed to produce latents")
            for pending in group:
                pending.settle(None, err)
            return False
        for pending in group:
            count = len(pending.job.rows)
            pending.job.prompts, prompts = prompts[:count], prompts[count:]
        return True

    def _decode(self, group: list[_Pending], params: SamplingParams) -> None:
        prompts = [prompt for pending in group for prompt in pending.job.prompts]
        self.observe_batch(len(prompts))
        try:
            outputs = self.engine.generate(prompts, params)
        except RolloutError as err:
            if len(group) > 1:
                for pending in group:  # find the one bad request
                    self._decode([pending], params)
            else:
                group[0].settle(None, err)
            return
        except Exception as err:
            log.exception("engine failed")
            for pending in group:
                pending.settle(None, err)
            return
        for pending in group:
            count = len(pending.job.prompts)
            pending.settle(outputs[:count], None)
            outputs = outputs[count:]
