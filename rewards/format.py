r"""Format reward: 1.0 if the completion is written in the expected answer format, else 0.0.

Styles:

* ``"hash"``: the last non-empty line is ``#### <number>`` (GSM8K style), with nothing but
  whitespace or a period after it;
* ``"boxed"``: a non-empty ``\boxed{...}`` is present.

A custom ``pattern`` (a regular expression, matched with :func:`re.search`; use inline flags such
as ``(?m)`` or ``(?s)`` if needed) replaces the style's pattern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._completions import completion_text

__all__ = ["STYLES", "FormatReward", "format_reward"]

_NUMBER = r"[-+]?\$?[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
STYLES: dict[str, str] = {
    "hash": rf"(?:\A|\n)[ \t]*####[ \t]*{_NUMBER}[ \t]*\.?\s*\Z",
    "boxed": r"(?s)\\boxed\s*\{(?=\s*[^\s}]).*\}",
}


@dataclass(eq=False)
class FormatReward:
    r"""1.0 per completion that matches the format, else 0.0 (never None: format is always
    judgeable).

    >>> FormatReward()(None, ["18 eggs\n#### 18\n", "#### 18 eggs", "A: 18"])
    [1.0, 0.0, 0.0]
    >>> FormatReward(style="boxed")(None, [[{"role": "assistant", "content": r"\boxed{18}"}]])
    [1.0]
    >>> FormatReward(pattern=r"(?m)^A: \d+$")(None, ["so\nA: 18"])
    [1.0]
    """

    pattern: str | None = None
    """Regular expression a well-formatted completion contains; replaces ``style`` if given."""
    style: str = "hash"
    """Built-in format when ``pattern`` is None: "hash" or "boxed"."""

    # TRL reads a reward function's name from ``__name__`` for its logs.
    __name__ = "format"

    def __post_init__(self) -> None:
        if self.pattern is None:
            if self.style not in STYLES:
                raise ValueError(
                    f"FormatReward.style must be one of {list(STYLES)}, got {self.style!r}"
                )
            source = STYLES[self.style]
        else:
            source = self.pattern
        try:
            self._regex = re.compile(source)
        except (re.error, TypeError) as exc:
            raise ValueError(
                f"FormatReward.pattern {self.pattern!r} is not a valid regular expression: {exc}"
            ) from exc

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """Score completions (strings or message lists); keyword arguments are ignored."""
        return [
            1.0 if self._regex.search(completion_text(completion, i)) else 0.0
            for i, completion in enumerate(completions)
        ]


format_reward = FormatReward()
"""A ready-made ``"hash"``-style instance for TRL."""
