"""Results over seeds: every claim about learning is a mean and a range over >= 3 seeds.

>>> mean_and_range([0.26, 0.30, 0.31])
'29.0% (26.0-31.0)'
"""

from __future__ import annotations

from collections.abc import Sequence


def mean_and_range(fractions: Sequence[float]) -> str:
    """``mean (min-max)`` of ``fractions``, in percent."""
    mean = sum(fractions) / len(fractions)
    return f"{mean:.1%} ({100 * min(fractions):.1f}-{100 * max(fractions):.1f})"
