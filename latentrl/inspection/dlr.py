"""What a DLR plugin's latents say to its frozen main model.

For each question and each latent slot, the policy's *mean* latent (what evaluation and
serving inject), projected into the main model's input space, is read two ways:

- **nearest tokens**: the vocabulary tokens whose input embeddings have the highest cosine
  similarity with the projected vector (the main model's own embedding matrix);
- **logit lens**: the frozen main model's next-token distribution at the slot's position,
  reading the prompt with every latent in place (what the model "thinks" right after it).

Aggregates: how often a slot's readings (the top-k of both) name the gold answer, an
intermediate result of the task's worked steps (the ``thought`` column, e.g. arith's), or
neither; the mean pairwise cosine between the latents of different questions (1 means
every question gets the same vectors); and how far sampled latents (mean + std * noise,
what RL explores) lie from the mean, relative to its norm. Readings compare whole tokens:
a tokenizer that splits numbers into digits can only match one-digit values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentrl.inspection.readings import draw_grid, shorten, top_tokens
from latentrl.models.latent_plugin import LatentPlugin, tokens_around_latents

SLOT_KINDS = ("answer", "intermediate", "neither")
# The result of each worked step: the number after the last "=" of a line.
_STEP_RESULT = re.compile(r"=\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass
class SlotReading:
    """One latent slot of one question: top-k tokens with their scores."""

    nearest: list[tuple[str, float]]
    """By cosine similarity with the main model's input embeddings."""
    lens: list[tuple[str, float]]
    """The main model's next-token probabilities at the slot."""
    kind: str
    """Which of :data:`SLOT_KINDS` the readings name."""


def nearest_tokens(
    vectors: torch.Tensor, embeddings: torch.Tensor, tokenizer, k: int
) -> list[list[tuple[str, float]]]:
    """For each vector [N, H], the ``k`` tokens of ``embeddings`` [V, H] most similar by cosine."""
    similarity = F.normalize(vectors.float(), dim=-1) @ F.normalize(embeddings.float(), dim=-1).T
    return top_tokens(similarity, tokenizer, k)


@torch.no_grad()
def logit_lens(
    main_model: nn.Module, prompt_embeds: torch.Tensor, positions: Sequence[int], tokenizer, k: int
) -> list[list[tuple[str, float]]]:
    """The main model's top-``k`` next tokens (with probabilities) at ``positions`` of a prompt."""
    logits = main_model(inputs_embeds=prompt_embeds[None]).logits[0, list(positions)]
    return top_tokens(logits.float().softmax(dim=-1), tokenizer, k)


def step_results(thought: str) -> set[str]:
    """The intermediate results of worked steps (one ``a op b = c`` per line).

    >>> sorted(step_results("8 - 1 = 7\\n7 + 7 = 14"))
    ['14', '7']
    """
    return {m.group(1) for line in thought.splitlines() if (m := _STEP_RESULT.search(line))}


def slot_kind(
    readings: Sequence[tuple[str, float]], answer: str, intermediates: set[str] | None
) -> str:
    """``answer`` if a reading is the gold answer, else ``intermediate`` if it is a step's result."""
    tokens = {token.strip() for token, _ in readings}
    if answer in tokens:
        return "answer"
    if intermediates and tokens & (intermediates - {answer}):
        return "intermediate"
    return "neither"


@torch.no_grad()
def inspect_plugin(
    plugin: LatentPlugin,
    main_model: nn.Module,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    top_k: int = 5,
    samples: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Readings of every slot of every row and the aggregates (see the module docstring).

    ``rows`` are a task's rows (``question``, ``prompt``, ``answer`` and, for the
    intermediate check, ``thought``); ``tokenizer`` is the main model's.
    """
    settings = plugin.settings
    embeddings = main_model.get_input_embeddings()
    has_steps = all("thought" in row for row in rows)
    generator = torch.Generator().manual_seed(seed)
    questions, means, spreads = [], [], []
    for row in rows:
        dist = plugin.distribution(*plugin.encode_questions([row["question"]]))
        mean = plugin.projector(dist.mean)[0]  # [N, H]
        noise = torch.randn((samples, *dist.mean.shape[1:]), generator=generator)
        sampled = plugin.projector(dist.mean + dist.log_std.exp() * noise)  # [S, N, H]
        spreads.append(((sampled - mean).norm(dim=-1) / mean.norm(dim=-1)).mean().item())
        prompt_embeds = plugin.inject(embeddings, tokenizer, row["prompt"], mean)
        before, _ = tokens_around_latents(
            tokenizer, row["prompt"], settings.answer_cue, settings.use_markers,
            settings.latent_position,
        )  # fmt: skip
        slots = range(len(before), len(before) + settings.num_latents)
        nearest = nearest_tokens(mean, embeddings.weight, tokenizer, top_k)
        lens = logit_lens(main_model, prompt_embeds, slots, tokenizer, top_k)
        readings = [
            SlotReading(near, read, slot_kind(near + read, *gold(row, has_steps)))
            for near, read in zip(nearest, lens, strict=True)
        ]
        questions.append({"question": row["question"], "answer": row["answer"],
                          "slots": [asdict(r) for r in readings]})  # fmt: skip
        means.append(mean)

    kinds = [slot["kind"] for q in questions for slot in q["slots"]]
    # Chance level: the same readings judged against the next question's answer and steps
    # (small numbers are common readings whatever the question).
    shifted = [
        slot_kind(slot["nearest"] + slot["lens"], *gold(rows[(i + 1) % len(rows)], has_steps))
        for i, q in enumerate(questions)
        for slot in q["slots"]
    ]
    return {
        "questions": questions,
        "slot_kinds": shares(kinds),
        "slot_kinds_other_question": shares(shifted),
        "intermediate_check": has_steps,
        "pairwise_cosine": mean_pairwise_cosine(torch.stack(means)),
        "sample_spread": sum(spreads) / len(spreads),
        "top_k": top_k,
    }


def gold(row: Mapping[str, Any], has_steps: bool) -> tuple[str, set[str] | None]:
    """A row's answer and, when the task has worked steps, their results."""
    return row["answer"], step_results(row["thought"]) if has_steps else None


def shares(kinds: Sequence[str]) -> dict[str, float]:
    return {kind: kinds.count(kind) / len(kinds) for kind in SLOT_KINDS}


def mean_pairwise_cosine(latents: torch.Tensor) -> float | None:
    """Mean cosine between the flattened latents [Q, N, H] of different questions.

    >>> mean_pairwise_cosine(torch.ones(3, 2, 4))
    1.0
    """
    if len(latents) < 2:
        return None
    flat = F.normalize(latents.flatten(1).float(), dim=-1)
    similarity = flat @ flat.T
    off_diagonal = ~torch.eye(len(flat), dtype=torch.bool)
    return round(similarity[off_diagonal].mean().item(), 4)


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The table ``latentrl inspect`` prints."""
    kinds, chance = report["slot_kinds"], report["slot_kinds_other_question"]
    checked = "" if report["intermediate_check"] else " (task has no worked steps: not checked)"
    pairwise = report["pairwise_cosine"]
    return [
        f"questions x slots                 {len(report['questions'])} x "
        f"{len(report['questions'][0]['slots'])}"
        f"   (chance: judged against another question's answer)",
        f"slots naming the gold answer      {kinds['answer']:.1%}   (chance {chance['answer']:.1%})",
        f"slots naming a step's result      {kinds['intermediate']:.1%}   "
        f"(chance {chance['intermediate']:.1%}){checked}",
        f"slots naming neither              {kinds['neither']:.1%}   (chance {chance['neither']:.1%})",
        f"cosine between questions' latents {'n/a' if pairwise is None else f'{pairwise:.3f}'}",
        f"sampled latents' distance to mean {report['sample_spread']:.3f} (relative)",
    ]


def draw_pictures(report: Mapping[str, Any], folder: Path, title: str) -> list[Path]:
    """``slots.png`` (questions x slots, top logit-lens token coloured by its probability)
    and ``aggregates.png`` (what the slots name); returns their paths."""
    import matplotlib.pyplot as plt

    questions = report["questions"]
    grid = draw_grid(
        [f"{shorten(q['question'], 38)} (= {q['answer']})" for q in questions],
        [[slot["lens"][0] for slot in q["slots"]] for q in questions],
        [f"slot {j + 1}" for j in range(len(questions[0]["slots"]))],
        f"{title}: the main model's top next token at each latent",
        folder / "slots.png",
    )

    fig, ax = plt.subplots(figsize=(5.5, 3))
    width = 0.38
    for offset, key, label, color in [
        (-width / 2, "slot_kinds", "its own question", "#48c"),
        (width / 2, "slot_kinds_other_question", "another question (chance)", "#bbb"),
    ]:
        values = [report[key][kind] for kind in SLOT_KINDS]
        xs = [x + offset for x in range(len(SLOT_KINDS))]
        ax.bar(xs, values, width, label=label, color=color)
        for x, value in zip(xs, values, strict=True):
            ax.text(x, value, f"{value:.0%}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(SLOT_KINDS)), SLOT_KINDS)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share of slots")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"What the latents name (top-{report['top_k']} readings)", fontsize=9)
    fig.tight_layout()
    aggregates = folder / "aggregates.png"
    fig.savefig(aggregates, dpi=120)
    plt.close(fig)
    return [grid, aggregates]
