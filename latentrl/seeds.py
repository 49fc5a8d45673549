"""Results over seeds: every claim about learning is a mean and a range over >= 3 seeds.

>>> mean_and_range([0.26, 0.30, 0.31])
'29.0% (26.0-31.0)'
>>> mean_and_range([0.5, 0.54, 0.52], percent=False)
'0.520 (0.500-0.540)'
"""

from __future__ import annotations

from collections.abc import Sequence


def mean_and_range(values: Sequence[float], percent: bool = True) -> str:
    """``mean (min-max)`` of ``values``, as percentages or as plain numbers."""
    mean = sum(values) / len(values)
    if percent:
        return f"{mean:.1%} ({100 * min(values):.1f}-{100 * max(values):.1f})"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"
