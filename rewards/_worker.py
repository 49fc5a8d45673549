"""Worker side of :class:`~latentrl.rewards.correctness.CorrectnessReward`.

Judges one completion against one gold answer under a per-item deadline: extract the answer,
compare two plain numbers exactly, hand anything else to math-verify. It runs in spawned pool
processes (or in-process), so it imports only math_verify, the extraction module and the
standard library: a worker that imported torch would take seconds and hundreds of MB to start.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from math_verify import parse, verify

from .extraction import DEFAULT_ORDER, extract_answer, normalize_number

__all__ = [
    "ERROR",
    "NO_ANSWER",
    "OK",
    "TIMEOUT",
    "UNPARSEABLE_GOLD",
    "Verdict",
    "deadline",
    "judge",
    "judge_many",
]

# A verdict is (status, reward, detail); reward is None unless status is OK.
OK = "ok"
UNPARSEABLE_GOLD = "unparseable_gold"
TIMEOUT = "timeout"
ERROR = "error"
Verdict = tuple[str, float | None, str]
NO_ANSWER = "no answer"  # the detail of a judged 0.0 for a completion without an answer


class ItemTimeout(BaseException):
    """Raised by the deadline's alarm. A BaseException, so that math-verify's and sympy's many
    ``except Exception`` blocks cannot swallow it and carry on."""


class _DropTimeoutDisabledWarning(logging.Filter):
    # math-verify warns once that its own timeout is off; ours (deadline) replaces it.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def signals_usable() -> bool:
    """SIGALRM deadlines work only in the main thread of a POSIX process."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


# An alarm that lands while the garbage collector runs a finaliser (regex's ``Group.__del__``
# during a sympy call, measured) raises where Python can only print and drop the exception
# ("Exception ignored in ..."), and the item then ran on for 26 s. So after the deadline the
# alarm repeats at this interval until one of them interrupts the item.
ALARM_REPEAT_S = 0.05


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`ItemTimeout` in the body after ``seconds`` (wall clock), and again every
    :data:`ALARM_REPEAT_S` until the body gives up.

    One timer for the whole item (math-verify's own timeouts are per call and whole seconds).
    A no-op outside the main thread. A timer the caller had armed (pytest-timeout, say) is
    restored with the time it had left.
    """
    if seconds is None or not signals_usable():
        yield
        return
    armed = True

    def _raise(signum: int, frame: Any) -> None:
        if armed:
            raise ItemTimeout

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, _raise)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds, ALARM_REPEAT_S)
    try:
        yield
    finally:
        armed = False  # first: a repeat that fires during this cleanup must not cut it short
        signal.setitimer(signal.ITIMER_REAL, 0)
        # None: a handler installed from C, which Python cannot reinstall; default is closest.
        signal.signal(signal.SIGALRM, signal.SIG_DFL if old_handler is None else old_handler)
        if old_delay > 0:
            left = max(old_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def _parse(answer: str) -> list[Any]:
    # Extracted answers come without delimiters; math-verify's LaTeX extractor wants "$...$"
    # ("sqrt(2)" alone parses to nothing, "$sqrt(2)$" to sqrt(2)). Fall back to the raw text.
    has_delimiters = any(d in answer for d in ("$", "\\(", "\\["))
    parsed = parse(
        answer if has_delimiters else f"${answer}$", parsing_timeout=None, raise_on_error=True
    )
    if not parsed and not has_delimiters:
        parsed = parse(answer, parsing_timeout=None, raise_on_error=True)
    return parsed


# A GRPO batch repeats each gold answer G times.
_parse_gold = functools.lru_cache(maxsize=512)(_parse)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _fast_verdict(pred: str | None, gold: str) -> Verdict | None:
    """Exact comparison when the gold is a plain number and the answer is one or absent."""
    gold_number = normalize_number(gold)
    if gold_number is None:
        return None
    if pred is None:
        return OK, 0.0, NO_ANSWER
    pred_number = normalize_number(pred)
    if pred_number is None:
        return None  # "2^{4}" vs "16": let math-verify decide
    # Canonical strings are equal exactly when the values are.
    return OK, 1.0 if pred_number == gold_number else 0.0, ""


def _math_verify(pred: str | None, gold: str) -> Verdict:
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return UNPARSEABLE_GOLD, None, f"math-verify cannot parse the gold answer {gold!r:.80}"
    if pred is None:
        return OK, 0.0, NO_ANSWER
    pred_parsed = _parse(pred)
    if not pred_parsed:
        return OK, 0.0, f"math-verify cannot parse the answer {pred!r:.80}"
    # The gold goes first: math-verify's comparison is not symmetric.
    same = verify(gold_parsed, pred_parsed, timeout_seconds=None, raise_on_error=True)
    return OK, 1.0 if same else 0.0, ""


def _judge(text: str, gold: str, order: Sequence[str], fast_path: bool) -> Verdict:
    pred = extract_answer(text, order)
    verdict = _fast_verdict(pred, gold) if fast_path else None
    return verdict if verdict is not None else _math_verify(pred, gold)


def judge(
    text: str,
    gold: str,
    order: Sequence[str] = DEFAULT_ORDER,
    fast_path: bool = True,
    timeout_s: float | None = 5.0,
) -> Verdict:
    """Judge a completion's text against a gold answer (as cleaned by ``gold_answer``).

    Never raises for bad input: a timeout or a math-verify exception becomes a verdict.

    >>> judge("so #### 1,234", "1234")
    ('ok', 1.0, '')
    >>> judge(r"\\boxed{\\frac{\\sqrt{2}}{2}}", "0.70710678")
    ('ok', 1.0, '')
    >>> judge("no idea", "x+2")
    ('ok', 0.0, 'no answer')
    """
    try:
        with deadline(timeout_s):
            try:
                return _judge(text, gold, order, fast_path)
            except Exception as exc:  # inside the deadline: str() of a sympy object can hang
                return ERROR, None, _describe(exc)
    except ItemTimeout:
        return TIMEOUT, None, f"judging took longer than {timeout_s} s"


def init_worker(ready: Any = None) -> None:
    """Pool initializer: pay the sympy/ANTLR import and warm-up before any item's clock runs,
    then report ready (``ready`` is a multiprocessing queue)."""
    # Ctrl-C goes to the whole process group; let the parent decide, not print N tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _judge("#### 1", "1", DEFAULT_ORDER, fast_path=False)
    if ready is not None:
        ready.put(os.getpid())


def ping() -> int:
    """A no-op task: submitting one per worker makes the pool start them all."""
    return os.getpid()


def judge_many(
    judge_fn: Callable[..., Verdict],
    items: list[tuple[str, str]],
    order: Sequence[str],
    fast_path: bool,
    timeout_s: float | None,
) -> list[Verdict]:
    """Judge a chunk of (text, gold) pairs, each under its own deadline (one pool task)."""
    return [judge_fn(text, gold, order, fast_path, timeout_s) for text, gold in items]
