"""Dual reward (DLR): ``r = correctness_weight * correctness + format_weight * format``.

None (cannot judge) whenever either part is None: a weighted sum with a missing term would
silently turn "unknown" into a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .correctness import CorrectnessReward
from .format import FormatReward

__all__ = ["DualReward", "RewardFn"]

RewardFn = Callable[..., list[float | None]]


@dataclass(eq=False)
class DualReward:
    r"""Weighted sum of a correctness reward and a format reward.

    >>> reward = DualReward(correctness_weight=1.0, format_weight=0.5)
    >>> reward(None, ["7 + 11 = 18\n#### 18", "The answer is 18.", "#### 17"], answer=["18", "18", "18"])
    [1.5, 1.0, 0.5]
    >>> reward(None, ["#### 18"], answer=[""])  # no gold answer: cannot judge
    [None]
    """

    correctness_weight: float = 1.0
    """Weight of the correctness reward (>= 0)."""
    format_weight: float = 0.2
    """Weight of the format reward (>= 0)."""
    correctness: RewardFn | Mapping[str, Any] | None = None
    """Correctness reward: a TRL-style function, or options for :class:`CorrectnessReward`
    (None: defaults)."""
    format: RewardFn | Mapping[str, Any] | None = None
    """Format reward: a TRL-style function, or options for :class:`FormatReward` (None: defaults)."""

    # TRL reads a reward function's name from ``__name__`` for its logs.
    __name__ = "dual"

    def __post_init__(self) -> None:
        for name in ("correctness_weight", "format_weight"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"DualReward.{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"DualReward.{name} must be >= 0, got {value!r}")
        self.correctness = _build(self.correctness, CorrectnessReward, "correctness")
        self.format = _build(self.format, FormatReward, "format")

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        """Score completions; keyword arguments go to both parts (the gold answer column among them)."""
        return self.score_parts(prompts, completions, **columns)[0]

    def score_parts(
        self, prompts: Sequence[Any] | None, completions: Sequence[Any], **columns: Any
    ) -> tuple[list[float | None], list[float | None], list[float | None]]:
        """The dual reward and its two parts (correctness, format), for logging them apart.

        >>> DualReward().score_parts(None, ["#### 18"], answer=["17"])
        ([0.2], [0.0], [1.0])
        """
        correct = self.correctness(prompts, completions, **columns)
        formatted = self.format(prompts, completions, **columns)
        for name, scores in (("correctness", correct), ("format", formatted)):
            if len(scores) != len(completions):
                raise ValueError(
                    f"DualReward: the {name} reward returned {len(scores)} scores for {len(completions)} completions"
                )
        dual = [
            None if c is None or f is None else self.correctness_weight * c + self.format_weight * f
            for c, f in zip(correct, formatted, strict=True)
        ]
        return dual, correct, formatted

    def close(self) -> None:
        """Close the parts that hold resources (the correctness reward's process pool)."""
        for part in (self.correctness, self.format):
            close = getattr(part, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> DualReward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _build(part: Any, default: type, name: str) -> RewardFn:
    if part is None:
        return default()
    if isinstance(part, Mapping):
        return default(**part)
    if not callable(part):
        raise ValueError(
            f"DualReward.{name} must be a reward function or a dict of options, got {part!r:.80}"
        )
    return part
