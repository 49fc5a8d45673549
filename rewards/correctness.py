"""Correctness reward: 1.0 if the completion's final answer equals the gold answer, else 0.0.

Each item (a completion and its gold answer) is judged under a deadline of ``timeout_s``, in the
calling process or in a reused process pool (``num_workers > 1``):

1. the final answer is extracted (:mod:`latentrl.rewards.extraction`);
2. fast path: when both answers are plain numbers (the GSM8K case), they are compared exactly
   as fractions, without math-verify;
3. anything else (``\\sqrt{2}/2``, ``x+1``) goes to math-verify (``from math_verify import
   parse, verify``), which sympy can make arbitrarily slow: hence the deadline, and a pool that
   survives workers stuck in C code where no signal reaches.

``None`` means "cannot judge" (timeout, math-verify error, missing or unparseable gold); it is
counted in :attr:`CorrectnessReward.stats` and logged. A completion without an extractable answer
is a judged 0.0: the model failed, the checker did not.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import time
import weakref
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import _worker
from ._completions import completion_text
from ._worker import ERROR, NO_ANSWER, OK, TIMEOUT, UNPARSEABLE_GOLD, Verdict
from .extraction import BOXED, DEFAULT_ORDER, HASH, check_order, extract_answer, normalize_number

__all__ = ["STAT_KEYS", "CorrectnessReward", "correctness", "correctness_reward", "gold_answer"]

logger = logging.getLogger(__name__)

STAT_KEYS = (
    "items",
    "judged",
    "no_answer",
    "timeouts",
    "unparseable_gold",
    "errors",
    "pool_restarts",
)
_STAT_OF_STATUS = {TIMEOUT: "timeouts", UNPARSEABLE_GOLD: "unparseable_gold", ERROR: "errors"}
_START_METHODS = ("spawn", "forkserver")  # never plain fork: torch may be imported in the parent
_POLL_S = 0.05
_STARTUP_TIMEOUT_S = 120.0
_MAX_ATTEMPTS = 2  # an item in flight when a worker died is retried once
_MAX_CHUNK = 8  # items per pool task: amortizes IPC, bounds how late a stuck worker is noticed
Job = tuple[int, str, str]  # (index in the batch, completion text, gold answer)


def gold_answer(gold: Any) -> str | None:
    r"""The gold answer to compare against, or None if there is none.

    A plain number comes back canonical; a full GSM8K solution (``... #### 18``) or a solution
    with a ``\boxed{}`` is reduced to its final answer; anything else is kept for math-verify.

    >>> gold_answer("1,234")
    '1234'
    >>> gold_answer("She has 3 + 4 = 7 apples.\n#### 7")
    '7'
    >>> gold_answer("  ") is None
    True
    """
    if isinstance(gold, (int, Fraction)) and not isinstance(gold, bool):
        gold = str(gold)
    elif isinstance(gold, float):
        gold = repr(gold) if math.isfinite(gold) else ""
    if not isinstance(gold, str) or not gold.strip():
        return None
    gold = gold.strip()
    number = normalize_number(gold)
    if number is not None:
        return number
    if "####" in gold or "\\boxed" in gold:
        final = extract_answer(gold, order=(HASH, BOXED))
        if final is not None:
            return final
    return gold


@dataclass(eq=False)
class CorrectnessReward:
    """Reward 1.0 for a correct final answer, 0.0 for a wrong or missing one, None if unjudgeable.

    TRL reward-function signature: ``reward(prompts, completions, answer=[...], **ignored)``;
    :meth:`score` takes the texts and gold answers directly. Counters accumulate in ``stats``
    (keys :data:`STAT_KEYS`); ``close()`` (or ``with``) stops the pool.

    >>> reward = CorrectnessReward()
    >>> reward(["q1", "q2", "q3"], ["... #### 18", "The answer is 17.", "no idea"],
    ...        answer=["18", "18", "18"])
    [1.0, 0.0, 0.0]
    >>> reward([None], [r"The answer is $\\frac{\\sqrt{2}}{2}$."], answer=[r"\\frac{1}{\\sqrt{2}}"])
    [1.0]
    >>> reward.stats["judged"], reward.stats["no_answer"]
    (4, 1)
    """

    extraction_order: Sequence[str] = DEFAULT_ORDER
    """Answer formats to try, in order (see ``latentrl.rewards.extraction.FORMATS``)."""
    timeout_s: float = 5.0
    """Deadline for one math-verify comparison, in seconds."""
    num_workers: int = 0
    """Process-pool size for math-verify; 0 or 1 runs it in the calling process. A pool also
    survives comparisons stuck in C code, which no signal can interrupt. Scripts that use a pool
    need the usual ``if __name__ == "__main__":`` guard (workers are spawned)."""
    gold_column: str = "answer"
    """Dataset column (TRL keyword argument) holding the gold answers."""
    use_fast_path: bool = True
    """Compare two plain numbers exactly in-process; False sends every item to math-verify."""
    pool_grace_s: float = 5.0
    """Slack before a pool worker is declared stuck (its alarm did not fire): a task of n items
    (n <= 8) still running ``2 * n * timeout_s + pool_grace_s`` after it was handed to the
    workers. Its items are retried one by one; the one that sticks again gets None, and each
    time the pool is restarted."""
    start_method: str = "spawn"
    """Process start method for the pool: "spawn" or "forkserver"."""

    # TRL reads a reward function's name from ``__name__`` for its logs.
    __name__ = "correctness"

    def __post_init__(self) -> None:
        self.extraction_order = check_order(self.extraction_order)
        for name, low in (("timeout_s", "> 0"), ("pool_grace_s", ">= 0")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"CorrectnessReward.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0 or (low == "> 0" and value == 0):
                raise ValueError(
                    f"CorrectnessReward.{name} must be a finite number {low}, got {value!r}"
                )
        if (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or self.num_workers < 0
        ):
            raise ValueError(
                f"CorrectnessReward.num_workers must be an int >= 0, got {self.num_workers!r}"
            )
        if not isinstance(self.use_fast_path, bool):
            raise ValueError(
                f"CorrectnessReward.use_fast_path must be True or False, got {self.use_fast_path!r}"
            )
        if not isinstance(self.gold_column, str) or not self.gold_column:
            raise ValueError(
                f"CorrectnessReward.gold_column must be a non-empty string, got {self.gold_column!r}"
            )
        if self.start_method not in _START_METHODS:
            raise ValueError(
                f"CorrectnessReward.start_method must be one of {list(_START_METHODS)}, got {self.start_method!r}"
            )
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self._warned_no_deadline = False

    # The judge run per item (_worker.judge's signature); a class attribute so that tests can
    # swap in one that hangs.
    # It must be a module-level function: pool workers import it by name.
    _judge_fn = staticmethod(_worker.judge)

    # --- TRL entry point -------------------------------------------------------------------

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        """Score ``completions`` against ``columns[gold_column]``; other keyword arguments
        (``completion_ids``, ``trainer_state``, other dataset columns) are ignored."""
        if self.gold_column not in columns:
            given = sorted(
                k
                for k in columns
                if k not in ("completion_ids", "trainer_state", "log_extra", "log_metric")
            )
            raise ValueError(
                f"CorrectnessReward needs the gold answers as keyword argument {self.gold_column!r} "
                f"(set gold_column to the dataset column that holds them); got columns {given}"
            )
        return self.score(completions, columns[self.gold_column])

    def score(self, completions: Sequence[Any], golds: Sequence[Any]) -> list[float | None]:
        """Score completions (strings or message lists) against gold answers, one each."""
        if len(completions) != len(golds):
            raise ValueError(
                f"CorrectnessReward got {len(completions)} completions but {len(golds)} gold answers "
                f"in {self.gold_column!r}; they must match one to one"
            )
        rewards: list[float | None] = [None] * len(completions)
        problems: dict[str, list[tuple[int, str]]] = {}
        jobs: list[Job] = []
        for i, (completion, raw_gold) in enumerate(zip(completions, golds, strict=True)):
            self.stats["items"] += 1
            gold = gold_answer(raw_gold)
            if gold is None:
                self._record(
                    i,
                    (UNPARSEABLE_GOLD, None, f"missing gold answer {raw_gold!r:.80}"),
                    rewards,
                    problems,
                )
                continue
            jobs.append((i, completion_text(completion, i), gold))
        for i, verdict in self._run(jobs).items():
            self._record(i, verdict, rewards, problems)
        for status, items in problems.items():
            index, detail = items[0]
            logger.warning(
                "correctness: %d of %d items could not be judged (%s), reward None; first: item %d: %s",
                len(items),
                len(completions),
                status,
                index,
                detail,
            )
        return rewards

    # --- helpers ---------------------------------------------------------------------------

    def _record(
        self,
        i: int,
        verdict: Verdict,
        rewards: list[float | None],
        problems: dict[str, list[tuple[int, str]]],
    ) -> None:
        status, reward, detail = verdict
        if status == OK:
            rewards[i] = reward
            self.stats["judged"] += 1
            if detail == NO_ANSWER:
                self.stats["no_answer"] += 1
        else:
            self.stats[_STAT_OF_STATUS[status]] += 1
            problems.setdefault(status, []).append((i, detail))

    def _run(self, jobs: list[Job]) -> dict[int, Verdict]:
        if not jobs:
            return {}
        if self.num_workers > 1:
            return self._run_in_pool(jobs)
        if not _worker.signals_usable() and not self._warned_no_deadline:
            # signal.setitimer works only in the main thread; a pool (num_workers > 1) does not
            # have this limit.
            logger.warning(
                "correctness: called outside the main thread with num_workers <= 1: no timeout"
            )
            self._warned_no_deadline = True
        return {
            i: self._judge_fn(text, gold, self.extraction_order, self.use_fast_path, self.timeout_s)
            for i, text, gold in jobs
        }

    def _run_in_pool(self, jobs: list[Job]) -> dict[int, Verdict]:
        # Workers enforce timeout_s per item with an alarm; this loop guards against a worker the
        # alarm cannot reach (stuck in C code) by restarting the pool, so the caller never hangs.
        # Items travel in small chunks (one IPC round trip each), and only a few chunks are in
        # flight: "running" then means "at a worker or next in line", and polls stay cheap.
        verdicts: dict[int, Verdict] = {}
        attempts: Counter[int] = Counter()
        size = max(1, min(_MAX_CHUNK, len(jobs) // (4 * self.num_workers)))
        todo = deque(jobs[k : k + size] for k in range(0, len(jobs), size))
        in_flight: dict[Future[list[Verdict]], list[Job]] = {}
        handed_at: dict[Future[list[Verdict]], float] = {}
        solo = False  # a suspect of a crash runs alone, so a second crash names the culprit
        while todo or in_flight:
            pool = self._ensure_pool()
            while todo and len(in_flight) < 2 * self.num_workers and not solo:
                if in_flight and any(attempts[i] for i, _, _ in todo[0]):
                    break
                chunk = todo.popleft()
                solo = any(attempts[i] for i, _, _ in chunk)
                items = [(text, gold) for _, text, gold in chunk]
                future = pool.submit(
                    _worker.judge_many,
                    self._judge_fn,
                    items,
                    self.extraction_order,
                    self.use_fast_path,
                    self.timeout_s,
                )
                in_flight[future] = chunk
            done, _ = wait(in_flight, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            broken = any(isinstance(f.exception(), BrokenProcessPool) for f in done)
            for future in done:
                if not isinstance(future.exception(), BrokenProcessPool):
                    handed_at.pop(future, None)
                    verdicts.update(_verdicts_of(future, in_flight.pop(future)))
            solo = solo and bool(in_flight)
            now = time.monotonic()
            # A chunk may wait behind another chunk before its own items run.
            stuck = {
                f
                for f, chunk in in_flight.items()
                if f.running()
                and now - handed_at.setdefault(f, now)
                > 2 * len(chunk) * self.timeout_s + self.pool_grace_s
            }
            if not (stuck or broken):
                continue
            for future, chunk in in_flight.items():
                if future.done() and future.exception() is None:
                    verdicts.update(_verdicts_of(future, chunk))
                elif future in stuck and len(chunk) == 1:
                    verdicts[chunk[0][0]] = (
                        TIMEOUT,
                        None,
                        "worker stuck past its alarm; pool restarted",
                    )
                elif future in stuck:
                    # Which item of a stuck chunk hangs is unknown: retry them one by one.
                    todo.extendleft([job] for job in chunk)
                elif broken:
                    # A worker died (crash, OOM kill): every item in flight is suspect; retry
                    # each once, alone.
                    for job in chunk:
                        attempts[job[0]] += 1
                        if attempts[job[0]] < _MAX_ATTEMPTS:
                            todo.appendleft([job])
                        else:
                            verdicts[job[0]] = ERROR, None, "a worker process died twice on it"
                else:
                    todo.appendleft(chunk)  # innocent: its worker is killed with the stuck one
            in_flight.clear()
            handed_at.clear()
            solo = False
            self.stats["pool_restarts"] += 1
            logger.warning(
                "correctness: %s; restarting the math-verify process pool",
                "a worker is stuck" if stuck else "a worker died",
            )
            self._kill_pool()
        return verdicts

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is not None:
            return self._pool
        context = multiprocessing.get_context(self.start_method)
        ready = context.Queue()
        pool = ProcessPoolExecutor(
            max_workers=self.num_workers,
            mp_context=context,
            initializer=_worker.init_worker,
            initargs=(ready,),
        )
        self._pool = pool
        self._finalizer = weakref.finalize(self, _shutdown, pool)
        # Start every worker now and wait for its imports, so start-up time is not counted against
        # the first items (it would look like stuck workers).
        pings = [pool.submit(_worker.ping) for _ in range(self.num_workers)]
        give_up = time.monotonic() + _STARTUP_TIMEOUT_S
        started = 0
        while started < self.num_workers:
            try:
                ready.get(timeout=max(0.0, give_up - time.monotonic()))
                started += 1
            except queue.Empty:
                logger.warning(
                    "correctness: %d of %d pool workers started", started, self.num_workers
                )
                break
        try:
            for ping in pings:
                ping.result(timeout=max(0.0, give_up - time.monotonic()))
        except BrokenProcessPool as exc:
            self._kill_pool()
            raise RuntimeError(
                f"correctness: the math-verify worker processes failed to start: {exc}"
            ) from exc
        except TimeoutError:
            logger.warning("correctness: pool workers are slow to start")
        ready.close()
        return pool

    def _kill_pool(self) -> None:
        self._stop_pool(kill=True)

    def _stop_pool(self, kill: bool) -> None:
        pool, self._pool = self._pool, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if pool is not None:
            _shutdown(pool, kill=kill)

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker processes (a later call starts a new pool)."""
        self._stop_pool(kill=False)

    def __enter__(self) -> CorrectnessReward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # A pool cannot be pickled (TRL may pickle reward functions); the copy starts its own.
        state = self.__dict__.copy()
        state["_pool"] = state["_finalizer"] = None
        return state


def _verdicts_of(future: Future[list[Verdict]], chunk: list[Job]) -> dict[int, Verdict]:
    exc = future.exception()
    if exc is not None:  # e.g. an answer that cannot be pickled
        error: Verdict = ERROR, None, f"{type(exc).__name__}: {str(exc)[:200]}"
        return {i: error for i, _, _ in chunk}
    return {i: verdict for (i, _, _), verdict in zip(chunk, future.result(), strict=True)}


def _shutdown(pool: ProcessPoolExecutor, kill: bool = False) -> None:
    """Shut a pool down without waiting on a stuck worker."""
    # ProcessPoolExecutor has no public way to stop a busy worker before Python 3.14.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if kill:
        for process in processes:
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.kill()
            process.join(timeout=2.0)


correctness = CorrectnessReward()
"""A ready-made instance for TRL: ``GRPOTrainer(reward_funcs=[correctness], ...)``."""
correctness_reward = correctness
