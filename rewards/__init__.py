"""Reward functions with TRL's signature: ``fn(prompts, completions, **columns) -> list[float | None]``.

``None`` means "cannot judge" (counted and logged), never a silent 0.

>>> from latentrl.rewards import get_reward
>>> reward = get_reward("dual", format_weight=0.5)
>>> reward(None, ["#### 18", "A: 17"], answer=["18", "18"])
[1.5, 0.0]
"""

from __future__ import annotations

# This folder is installed as latentrl.rewards (pyproject's package-dir). Imported as a
# top-level `rewards` (from the repository root) it would be a second copy of every module,
# whose classes fail isinstance checks against latentrl.rewards's.
if __name__ != "latentrl.rewards":
    raise ImportError(
        f"import latentrl.rewards, not {__name__}: rewards/ is latentrl.rewards's source"
    )

import dataclasses
from typing import Any

from .correctness import CorrectnessReward, correctness_reward, gold_answer
from .dual import DualReward, RewardFn
from .extraction import (
    A_COLON,
    ANSWER_IS,
    BOXED,
    DEFAULT_ORDER,
    FORMATS,
    HASH,
    LAST_NUMBER,
    extract_answer,
    normalize_number,
)
from .format import FormatReward, format_reward

# The module-level instance is also ``latentrl.rewards.correctness.correctness``; it is exported
# here as ``correctness_reward`` because the name ``correctness`` belongs to the submodule.
__all__ = [
    "A_COLON",
    "ANSWER_IS",
    "BOXED",
    "DEFAULT_ORDER",
    "FORMATS",
    "HASH",
    "LAST_NUMBER",
    "REWARDS",
    "CorrectnessReward",
    "DualReward",
    "FormatReward",
    "RewardFn",
    "correctness_reward",
    "extract_answer",
    "format_reward",
    "get_reward",
    "gold_answer",
    "normalize_number",
]

REWARDS: dict[str, type] = {
    "correctness": CorrectnessReward,
    "format": FormatReward,
    "dual": DualReward,
}


def get_reward(name: str, **options: Any) -> RewardFn:
    """A new reward function by registry name, with options for its class.

    >>> get_reward("format", style="boxed").style
    'boxed'
    >>> get_reward("exact")
    Traceback (most recent call last):
    ...
    ValueError: unknown reward 'exact'; known rewards: ['correctness', 'dual', 'format']
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARDS)}")
    cls = REWARDS[name]
    known = sorted(field.name for field in dataclasses.fields(cls))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for reward {name!r}; known options: {known}")
    return cls(**options)
