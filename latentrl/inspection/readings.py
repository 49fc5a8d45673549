"""What every inspection view shares: top-k token readings and the questions x steps grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")  # pictures go to files; no display is needed or wanted


def top_tokens(scores: torch.Tensor, tokenizer, k: int) -> list[list[tuple[str, float]]]:
    """Per row of ``scores`` [N, V], its ``k`` highest-scoring tokens as (text, score)."""
    top = scores.topk(k, dim=-1)
    return [
        [(tokenizer.decode([i]), round(v, 4)) for v, i in zip(vs, ids, strict=True)]
        for vs, ids in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def visible(token: str) -> str:
    r"""A token as a picture can show it: spaces as ``␣``, newlines as ``\n``.

    >>> visible(" 7"), visible(" "), visible("\n")
    ('␣7', '␣', '\\n')
    """
    return token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t")


def draw_grid(
    row_labels: Sequence[str],
    cells: Sequence[Sequence[tuple[str, float]]],
    column_labels: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """A picture of one (token, probability) per cell, coloured by the probability."""
    import matplotlib.pyplot as plt

    probs = [[prob for _, prob in row] for row in cells]
    fig, ax = plt.subplots(figsize=(2.6 + 1.6 * len(column_labels), 1.0 + 0.42 * len(cells)))
    image = ax.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(cells):
        for j, (token, prob) in enumerate(row):
            ax.text(j, i, visible(token)[:13], ha="center", va="center", fontsize=8,
                    color="white" if prob > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(column_labels)), column_labels)
    ax.set_yticks(range(len(cells)), list(row_labels), fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="probability", fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with "..." when cut."""
    return text if len(text) <= width else text[: width - 3] + "..."
