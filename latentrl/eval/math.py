"""Math evaluation: decode a task's prompts through the rollout engine and score the answers.

The engine sees token ids only; this module tokenizes, decodes greedily (or samples), and
scores each completion with the task's correctness and format rewards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from latentrl.rewards import get_reward
from latentrl.rewards.extraction import extract_answer
from latentrl.rollout import RolloutEngine, SamplingParams


@dataclass
class MathEvalResult:
    """Summary of one evaluation run (one row per sample in ``samples``)."""

    task: str
    num_problems: int
    num_samples: int
    accuracy: float
    """Correct samples / judged samples (unjudged ones are counted in ``unjudged``)."""
    format_rate: float
    unjudged: int
    mean_completion_tokens: float
    seconds: float
    tokens_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_math(
    engine: RolloutEngine,
    tokenizer,
    task,
    rows: Sequence[dict[str, Any]],
    params: SamplingParams,
) -> tuple[MathEvalResult, list[dict[str, Any]]]:
    """Decode ``rows``' prompts and score them; returns the summary and per-sample records."""
    correctness = get_reward("correctness")
    format_reward = get_reward("format", style=task.answer_format)
    prompts = [tokenizer(row["prompt"], add_special_tokens=False)["input_ids"] for row in rows]
    started = time.perf_counter()
    outputs = engine.generate(prompts, params)
    seconds = time.perf_counter() - started

    samples = []
    for row, output in zip(rows, outputs, strict=True):
        for completion in output.completions:
            samples.append(
                {
                    "prompt": row["prompt"],
                    "completion": completion.text,
                    "gold": row["answer"],
                    "extracted": extract_answer(completion.text),
                    "tokens": len(completion.token_ids),
                    "finish_reason": completion.finish_reason,
                }
            )
    texts = [s["completion"] for s in samples]
    golds = [s["gold"] for s in samples]
    verdicts = correctness([s["prompt"] for s in samples], texts, answer=golds)
    formats = format_reward([s["prompt"] for s in samples], texts)
    for sample, verdict, formatted in zip(samples, verdicts, formats, strict=True):
        sample["correct"] = verdict
        sample["format"] = formatted

    judged = [v for v in verdicts if v is not None]
    tokens = sum(s["tokens"] for s in samples)
    result = MathEvalResult(
        task=task.name,
        num_problems=len(rows),
        num_samples=len(samples),
        accuracy=sum(judged) / len(judged) if judged else 0.0,
        format_rate=sum(formats) / len(formats) if formats else 0.0,
        unjudged=len(verdicts) - len(judged),
        mean_completion_tokens=tokens / len(samples) if samples else 0.0,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
    )
    return result, samples
