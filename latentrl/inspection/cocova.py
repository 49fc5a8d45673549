"""Where a CoCoVa plugin's Latent Q-Former looks, step by step.

For a few held-out images: the queries' cross-attention over the image patches at each
refinement step (mean over queries and heads), overlaid on the image; the patches token
selection keeps for the next step (outlined); the gate ``tanh(alpha)`` and each step's
relative update size; and the answer the language model gives with the plugin, next to
the gold answer. Aggregate: how concentrated the attention is (the share of it on the
top 10% of patches) per step, averaged over the images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentrl.data.vqa import encode_rows, evaluate_vqa, question_embeds
from latentrl.inspection.readings import shorten
from latentrl.models.qformer import CoCoVaPlugin
from latentrl.rollout import RolloutEngine


@torch.no_grad()
def inspect_cocova(
    plugin: CoCoVaPlugin,
    engine: RolloutEngine,
    tokenizer,
    embed: nn.Module,
    rows: Sequence[Mapping[str, Any]],
    visual: torch.Tensor,
    max_position_embeddings: int,
) -> dict[str, Any]:
    """Attention maps, kept patches, gate and answers for ``rows`` (with ``visual`` tokens)."""
    settings = plugin.config.settings
    if settings.architecture != "lqformer":
        raise ValueError("inspect: a llava-architecture plugin has no latent thoughts to show")
    if math.isqrt(visual.shape[1]) ** 2 != visual.shape[1]:
        raise ValueError(
            f"inspect: {visual.shape[1]} visual tokens do not form a square patch grid"
        )
    encoded = encode_rows(
        tokenizer, rows, plugin.config.answer_cue, settings.num_queries, max_position_embeddings
    )
    text, pad = question_embeds(embed, encoded, tokenizer.pad_token_id)
    out = plugin(visual.to(text.device), text, pad)
    _, samples = evaluate_vqa(engine, tokenizer, embed, plugin, rows, encoded, visual)
    images = []
    for i, sample in enumerate(samples):
        maps = [step[i] for step in out.attention]
        images.append({
            "question": sample["question"],
            "answer": sample["completion"].strip(),
            "gold": sample["answer"],
            "correct": sample["correct"],
            "iterations": sample["iterations"],
            "attention": [[round(v, 4) for v in m.tolist()] for m in maps],
            "kept": [k[i].tolist() for k in out.kept],
        })  # fmt: skip
    return {
        "images": images,
        "gate": round(math.tanh(plugin.lqformer.gate.item()), 4),
        "update_sizes": [round(u, 4) for u in out.update_sizes],
        "top_decile_attention": [round(mean_top_share(step, 0.1), 4) for step in out.attention],
    }


def mean_top_share(maps: torch.Tensor, fraction: float) -> float:
    """Mean over rows of maps [B, N] of the share of attention on the top ``fraction`` of N.

    >>> mean_top_share(torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]), 0.5)
    0.75
    """
    top = maps.topk(max(1, round(fraction * maps.shape[1])), dim=1).values.sum(dim=1)
    return (top / maps.sum(dim=1).clamp(min=1e-8)).mean().item()


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    images = report["images"]
    correct = sum(bool(image["correct"]) for image in images)
    return [
        f"images x refinement steps         {len(images)} x {len(report['top_decile_attention'])}",
        f"answered correctly                {correct} of {len(images)}",
        f"gate tanh(alpha)                  {report['gate']:.3f}",
        "attention on the top 10% patches  "
        + " / ".join(f"{share:.0%}" for share in report["top_decile_attention"])
        + "  (per step)",
    ]


def draw_pictures(
    report: Mapping[str, Any], folder: Path, title: str, pictures: Sequence
) -> list[Path]:
    """``attention.png``: a row per image, a panel per step (``pictures`` are the images)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    images = report["images"]
    steps = len(report["top_decile_attention"])
    fig, axes = plt.subplots(
        len(images), steps, figsize=(2.3 * steps, 2.6 * len(images)), squeeze=False
    )
    for row, (image, picture) in enumerate(zip(images, pictures, strict=True)):
        side = math.isqrt(len(image["attention"][0]))
        width, height = picture.size
        for step in range(steps):
            ax = axes[row][step]
            grid = torch.tensor(image["attention"][step]).reshape(side, side).numpy()
            ax.imshow(picture)
            ax.imshow(grid, cmap="magma", alpha=0.55, extent=(0, width, height, 0),
                      interpolation="nearest")  # fmt: skip
            if step < len(image["kept"]):
                for index in image["kept"][step]:
                    r, c = divmod(index, side)
                    ax.add_patch(Rectangle((c * width / side, r * height / side), width / side,
                                           height / side, fill=False, color="cyan", lw=1))  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"step {step + 1}", fontsize=8)
        mark = "right" if image["correct"] else "wrong"
        axes[row][0].set_ylabel(
            f"{shorten(image['question'], 34)}\nanswer {image['answer']!r}, gold "
            f"{image['gold']!r} ({mark})",
            fontsize=7,
        )
    fig.suptitle(
        f"{title}: LQ-Former attention per step (kept patches outlined), gate {report['gate']:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    path = folder / "attention.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
