"""VQA rows as a language model's inputs, and a CoCoVa plugin's answers scored: shared by
the CoCoVa trainer (its held-out evaluation) and ``latentrl eval``.

The language model reads ``question prefix <|latent_start|> [slot] <|latent_end|> Answer:``
where the slot holds the plugin's projected vectors (latent thoughts, or the projected
visual tokens of the LLaVA-style baseline), as ``prompt_embeds``. Answers are greedy and
scored by exact match after normalisation, overall and per level (``shapes_vqa``), next to
the majority-answer baseline (the most common training answer of each level). The mean
number of LQ-Former iterations used is reported (it drops below K with early stopping).

``latentrl eval --task shapes_vqa --model LM --plugin runs/cocova/plugin`` runs it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from latentrl.models.tokens import LATENT_END_TOKEN, LATENT_START_TOKEN, split_answer_cue
from latentrl.rollout import RolloutEngine, SamplingParams
from latentrl.tasks.vqa import answers_match


class EncodedRow(NamedTuple):
    """Token ids around the latent slot, for one row."""

    prefix: list[int]  # the prompt before the answer cue, then <|latent_start|>
    suffix: list[int]  # <|latent_end|>, then the answer cue
    question: list[int]  # the question alone (the LQ-Former's text input)
    target: list[int]  # " answer" and EOS


def encode_rows(
    tokenizer, rows: Sequence[Mapping], answer_cue: str, slot_size: int, max_length: int
) -> list[EncodedRow]:
    """Tokenise every row; a row that cannot fit ``max_length`` raises, naming the row."""
    start = tokenizer.convert_tokens_to_ids(LATENT_START_TOKEN)
    end = tokenizer.convert_tokens_to_ids(LATENT_END_TOKEN)
    cue = tokenizer(answer_cue, add_special_tokens=False)["input_ids"] if answer_cue else []
    encoded = []
    for row in rows:
        prompt = row["prompt"]
        prefix, _ = split_answer_cue(prompt, answer_cue)
        item = EncodedRow(
            prefix=tokenizer(prefix, add_special_tokens=False)["input_ids"] + [start],
            suffix=[end, *cue],
            question=tokenizer(row["question"], add_special_tokens=False)["input_ids"],
            target=tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id],
        )
        length = len(item.prefix) + slot_size + len(item.suffix) + len(item.target)
        if length > max_length:
            raise ValueError(
                f"{row.get('where', 'row')}: the question is too long: {length} positions with "
                f"the {slot_size} latent vectors and the answer, but the language model's "
                f"context is {max_length}"
            )
        encoded.append(item)
    return encoded


def pad_ids(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] and a padding mask [B, L] (True at padding)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    pad = torch.ones((len(sequences), width), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        pad[i, : len(seq)] = False
    return ids, pad


def question_embeds(
    embed: nn.Module, encoded: Sequence[EncodedRow], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The questions' LM input embeddings [B, L, H] and padding mask [B, L], on the
    embeddings' device."""
    ids, pad = pad_ids([e.question for e in encoded], pad_id)
    ids, pad = ids.to(embed.weight.device), pad.to(embed.weight.device)
    with torch.no_grad():
        return embed(ids), pad


def mean_embedding(embeds: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding positions [B, L, H] -> [B, H]."""
    keep = (~pad).unsqueeze(-1).float()
    return (embeds * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def slot_prompt(embed: nn.Module, row: EncodedRow, slot: torch.Tensor) -> torch.Tensor:
    """``prompt_embeds`` [L, H]: prefix, the slot vectors [T, H], suffix."""
    device = slot.device
    return torch.cat(
        [
            embed(torch.tensor(row.prefix, device=device)),
            slot,
            embed(torch.tensor(row.suffix, device=device)),
        ]
    )


@torch.no_grad()
def plugin_prompts(
    plugin: nn.Module | None,
    embed: nn.Module,
    encoded: Sequence[EncodedRow],
    visual_tokens: torch.Tensor,
    pad_id: int,
    batch_size: int = 256,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every row's ``prompt_embeds`` and the LQ-Former iterations it used [R].

    Without a plugin the slot stays empty: the language model answers from the question
    alone (the question-only baseline). ``visual_tokens`` may stay on the CPU: each chunk
    moves to the embeddings' device (the plugin's)."""
    if plugin is None:
        empty = embed.weight.new_zeros(0, embed.weight.shape[1])
        with torch.no_grad():
            prompts = [slot_prompt(embed, row, empty) for row in encoded]
        return prompts, torch.zeros(len(encoded), dtype=torch.long)
    prompts, iterations = [], []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        text, pad = question_embeds(embed, chunk, pad_id)
        out = plugin(visual_tokens[start : start + batch_size].to(text.device), text, pad)
        prompts += [
            slot_prompt(embed, row, slot) for row, slot in zip(chunk, out.embeds, strict=True)
        ]
        iterations.append(out.iterations)
    return prompts, torch.cat(iterations)


def majority_answers(train_rows: Sequence[Mapping]) -> dict[Any, str]:
    """The most common training answer per level (key None: over all rows)."""
    by_level: dict[Any, Counter] = defaultdict(Counter)
    for row in train_rows:
        by_level[row.get("level")][row["answer"]] += 1
        by_level[None][row["answer"]] += 1
    return {level: counts.most_common(1)[0][0] for level, counts in by_level.items()}


def accuracy_table(rows: Sequence[Mapping], correct: Sequence[bool]) -> dict[str, float]:
    """``accuracy`` overall and ``accuracy_level_N`` for each level present."""
    table = {"accuracy": sum(correct) / max(1, len(correct))}
    levels = sorted({row["level"] for row in rows if row.get("level") is not None})
    for level in levels:
        hits = [c for row, c in zip(rows, correct, strict=True) if row.get("level") == level]
        table[f"accuracy_level_{level}"] = sum(hits) / len(hits)
    return table


def majority_table(rows: Sequence[Mapping], majority: Mapping[Any, str]) -> dict[str, float]:
    """The majority-answer baseline's accuracy, overall and per level."""
    guesses = [majority.get(row.get("level"), majority[None]) for row in rows]
    correct = [answers_match(g, row["answer"]) for g, row in zip(guesses, rows, strict=True)]
    return {f"majority_{k}": v for k, v in accuracy_table(rows, correct).items()}


def evaluate_vqa(
    engine: RolloutEngine,
    tokenizer,
    embed: nn.Module,
    plugin: nn.Module | None,
    rows: Sequence[Mapping],
    encoded: Sequence[EncodedRow],
    visual_tokens: torch.Tensor,
    max_tokens: int = 4,
) -> tuple[dict[str, float], list[dict]]:
    """Greedy answers through ``engine`` -> (accuracy table with mean iterations, samples)."""
    prompts, iterations = plugin_prompts(
        plugin, embed, encoded, visual_tokens, tokenizer.pad_token_id
    )
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    texts = [out.completions[0].text for out in outputs]
    correct = [answers_match(text, row["answer"]) for text, row in zip(texts, rows, strict=True)]
    result = accuracy_table(rows, correct)
    result["mean_iterations"] = iterations.float().mean().item()
    samples = [
        {
            "question": row["question"],
            "level": row.get("level"),
            "answer": row["answer"],
            "completion": text,
            "correct": hit,
            "iterations": int(steps),
        }
        for row, text, hit, steps in zip(rows, texts, correct, iterations.tolist(), strict=True)
    ]
    return result, samples


def format_table(result: Mapping[str, float], baselines: Mapping[str, float]) -> str:
    """Accuracy next to the baselines (keys ``majority_accuracy...`` and, when measured,
    ``question_only_accuracy...``), overall and per level."""
    columns = [name for name in ("majority", "question_only") if f"{name}_accuracy" in baselines]
    lines = [f"{'':<14}{'accuracy':>10}" + "".join(f"{name:>15}" for name in columns)]
    for key, value in result.items():
        if key.startswith("accuracy"):
            label = key.replace("accuracy_level_", "level ").replace("accuracy", "all")
            cells = "".join(f"{baselines[f'{name}_{key}']:>15.1%}" for name in columns)
            lines.append(f"{label:<14}{value:>10.1%}{cells}")
    lines.append(f"{'iterations':<14}{result['mean_iterations']:>10.2f}")
    return "\n".join(lines)
