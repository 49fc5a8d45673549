"""Helpers the reward tests hand to spawned pool workers (they must be importable by name)."""

from __future__ import annotations

import os
import signal
import sys
import time

from latentrl.rewards import CorrectnessReward
from latentrl.rewards._worker import Verdict, judge

HANG = "hang"
CRASH = "crash"


def judge_or_hang(text: str, gold: str, order, fast_path: bool, timeout_s: float | None) -> Verdict:
    """The real judge, except that a completion containing "hang" blocks like C code that no
    signal reaches (SIGALRM blocked, so the worker's own deadline cannot fire)."""
    if HANG in text:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(600)
    return judge(text, gold, order, fast_path, timeout_s)


def judge_or_crash(
    text: str, gold: str, order, fast_path: bool, timeout_s: float | None
) -> Verdict:
    """The real judge, except that a completion containing "crash" kills its worker process."""
    if CRASH in text:
        os._exit(1)
    return judge(text, gold, order, fast_path, timeout_s)


class HangingCorrectnessReward(CorrectnessReward):
    _judge_fn = staticmethod(judge_or_hang)


class CrashingCorrectnessReward(CorrectnessReward):
    _judge_fn = staticmethod(judge_or_crash)


def heavy_modules_loaded() -> list[str]:
    """Which heavy modules a worker process has imported."""
    return sorted(
        name for name in ("torch", "transformers", "vllm", "math_verify") if name in sys.modules
    )
