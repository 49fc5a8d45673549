"""A run's metrics: ``metrics.jsonl`` (one JSON object per step), accelerate's trackers,
and ``curves.png``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


class MetricsLog:
    """Appends one JSON object per step to ``metrics.jsonl`` and forwards to accelerate's trackers.

    On resume, lines past the resumed step (written after the checkpoint) are dropped so the
    log reads as one uninterrupted run.
    """

    def __init__(self, run_dir: Path, accelerator=None, resume_step: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.accelerator = accelerator
        # One writer: in multi-process runs the other processes only forward to trackers.
        self.writes = accelerator is None or accelerator.is_main_process
        if not self.writes:
            return
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [row for row in read_metrics(self.path) if row["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.writes:
            row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        if self.accelerator is not None:
            self.accelerator.log(metrics, step=step)

    def rows(self) -> list[dict[str, Any]]:
        """Every step logged so far (read back from the file)."""
        return read_metrics(self.path)

    def plot(self, keys: Iterable[str], title: str) -> None:
        """``curves.png`` beside the log, a panel per metric in ``keys`` (by the writer)."""
        if self.writes:
            plot_curves(self.rows(), keys, self.path.with_name("curves.png"), title)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(
    metrics: Sequence[dict[str, Any]], keys: Iterable[str], path: Path, title: str
) -> None:
    """One PNG with a panel per metric over steps (raw and a moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in row for row in metrics)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        points = [(row["step"], row[key]) for row in metrics if row.get(key) is not None]
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, alpha=0.35, label="per step")
        ax.plot(steps, moving_average(values, 10), label="moving average (10)")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def reward_trend(rows: Sequence[dict], window: int = 20) -> str:
    """Mean batch reward of the first and the last ``window`` logged steps, as one line."""
    if not rows:
        return "no steps logged"
    window = max(1, min(window, len(rows) // 2 or 1))
    first, last = rows[:window], rows[-window:]

    def mean(part: Sequence[dict]) -> float:
        return sum(r["reward_mean"] for r in part) / len(part)

    return (
        f"reward trend: steps {first[0]['step']}-{first[-1]['step']} {mean(first):.3f} -> "
        f"steps {last[0]['step']}-{last[-1]['step']} {mean(last):.3f}"
    )
