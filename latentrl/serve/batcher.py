"""Micro-batching: concurrent requests gathered into one call of the synchronous engine.

The serving path for backends without an async engine (transformers, a remote vLLM
server), and the baseline ``benchmarks/serve_latency.py`` measures vLLM's async engine
against. The rollout engine decodes a list of prompts at once but blocks while it does,
so one worker thread owns it. Requests queue up from the event loop; the worker takes the
first, waits ``wait_s`` for more (everything that arrived while the previous batch was
decoding is already there), then calls ``engine.generate`` once per distinct set of
sampling parameters (the engine takes one set per call), so requests with the same
settings share a batch. A request arriving while a batch decodes waits for all of it.

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
from dataclasses import dataclass

from latentrl.rollout import Prompt, RequestOutput, RolloutEngine, RolloutError, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    prompts: list[Prompt]
    params: SamplingParams
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
        max_batch_prompts: int = 256,
        wait_s: float = 0.002,
        observe_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.engine = engine
        self.max_batch_prompts = max_batch_prompts
        self.wait_s = wait_s
        self.observe_batch = observe_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._in_batch = 0  # requests of the batch being decoded
        self._thread = threading.Thread(target=self._work, name="latentrl-batcher", daemon=True)
        self._thread.start()

    async def submit(self, prompts: list[Prompt], params: SamplingParams) -> list[RequestOutput]:
        """Decode ``prompts``; one ``RequestOutput`` per prompt. Raises ``RolloutError``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(prompts, params, future, loop))
        return await future

    def unfinished_requests(self) -> int:
        """Requests waiting or decoding, including those whose client has gone: a batch
        being decoded runs to its end."""
        return self._queue.qsize() + self._in_batch

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    # ---- the worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            stopping = False
            deadline = time.monotonic() + self.wait_s
            while sum(len(p.prompts) for p in batch) < self.max_batch_prompts:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._in_batch = len(batch)
            self._run(batch)
            self._in_batch = 0
            if stopping:
                return

    def _run(self, batch: list[_Pending]) -> None:
        by_params: dict[SamplingParams, list[_Pending]] = {}
        for pending in batch:
            by_params.setdefault(pending.params, []).append(pending)
        for params, group in by_params.items():
            self._decode(group, params)

    def _decode(self, group: list[_Pending], params: SamplingParams) -> None:
        prompts = [prompt for pending in group for prompt in pending.prompts]
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
            count = len(pending.prompts)
            pending.settle(outputs[:count], None)
            outputs = outputs[count:]
