"""Math evaluation: decode a task's prompts through the rollout engine and score the answers.

Each problem gets ``n`` completions. Accuracy is reported two ways:

- **strict**: only the task's own answer format counts (``#### N`` or ``\\boxed{}``);
- **flexible**: any supported form, down to the last number in the text, compared by
  math-verify (see ``latentrl.rewards``).

``pass@1`` is the mean correctness over all samples (flexible); ``maj@n`` votes over the
n flexible answers of a problem. Answers that cannot be judged (``None``) are counted in
``unjudged`` and left out of the means.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tqdm.auto import tqdm

from latentrl.rewards import CorrectnessReward, FormatReward
from latentrl.rewards.extraction import DEFAULT_ORDER, extract_answer
from latentrl.rollout import Prompt, RolloutEngine, SamplingParams

PROGRESS_CHUNK = 256
"""Problems per engine call when there are more (a progress bar step)."""


@dataclass
class MathEvalResult:
    """Summary of one evaluation run (one record per sample comes with it)."""

    task: str
    num_problems: int
    samples_per_problem: int
    strict_accuracy: float
    flexible_accuracy: float
    """Also pass@1 averaged over the n samples of each problem."""
    majority_accuracy: float
    """maj@n over the flexible answers."""
    format_rate: float
    unjudged: int
    mean_completion_tokens: float
    seconds_per_problem: float
    tokens_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("strict accuracy", f"{self.strict_accuracy:.1%}"),
            ("flexible accuracy (pass@1)", f"{self.flexible_accuracy:.1%}"),
            (f"maj@{self.samples_per_problem}", f"{self.majority_accuracy:.1%}"),
            ("strict/flexible gap", f"{self.flexible_accuracy - self.strict_accuracy:+.1%}"),
            ("format rate", f"{self.format_rate:.1%}"),
            ("unjudged answers", str(self.unjudged)),
            ("mean completion tokens", f"{self.mean_completion_tokens:.1f}"),
            ("latency per problem", f"{self.seconds_per_problem * 1000:.1f} ms"),
            ("throughput", f"{self.tokens_per_second:.0f} tokens/s"),
        ]
        return "\n".join(f"{name:<28}{value:>12}" for name, value in rows)


def evaluate_math(
    engine: RolloutEngine,
    tokenizer,
    task,
    rows: Sequence[dict[str, Any]],
    params: SamplingParams,
    prompts: Sequence[Prompt] | None = None,
) -> tuple[MathEvalResult, list[dict[str, Any]]]:
    """Decode ``rows`` (or the given ``prompts``, e.g. with injected latents) and score them.

    Returns the summary and one record per sample: prompt, completion, gold, the strict and
    flexible extracted answers and verdicts, the format verdict and the token count.
    """
    if prompts is None:
        prompts = [tokenizer(row["prompt"], add_special_tokens=False)["input_ids"] for row in rows]
    prompts = list(prompts)
    started = time.perf_counter()
    # In chunks, for a progress bar on long runs; each chunk is still one batched call.
    outputs = []
    with tqdm(total=len(prompts), desc=f"{task.name} eval", unit="problem",
              disable=len(prompts) <= PROGRESS_CHUNK) as progress:  # fmt: skip
        for start in range(0, len(prompts), PROGRESS_CHUNK):
            outputs += engine.generate(prompts[start : start + PROGRESS_CHUNK], params)
            progress.update(len(outputs) - progress.n)
    seconds = time.perf_counter() - started

    samples = [
        {
            "problem": index,
            "prompt": row["prompt"],
            "completion": completion.text,
            "gold": row["answer"],
            "tokens": len(completion.token_ids),
            "finish_reason": completion.finish_reason,
        }
        for index, (row, output) in enumerate(zip(rows, outputs, strict=True))
        for completion in output.completions
    ]
    texts = [s["completion"] for s in samples]
    golds = [s["gold"] for s in samples]
    strict_order = (task.answer_format,)
    with (
        CorrectnessReward(extraction_order=strict_order) as strict,
        CorrectnessReward(extraction_order=DEFAULT_ORDER) as flexible,
    ):
        strict_verdicts = strict(None, texts, answer=golds)
        flexible_verdicts = flexible(None, texts, answer=golds)
    formats = FormatReward(style=task.answer_format)(None, texts)
    for sample, strict_ok, flexible_ok, formatted in zip(
        samples, strict_verdicts, flexible_verdicts, formats, strict=True
    ):
        sample["strict_answer"] = extract_answer(sample["completion"], strict_order)
        sample["flexible_answer"] = extract_answer(sample["completion"])
        sample["strict_correct"] = strict_ok
        sample["flexible_correct"] = flexible_ok
        sample["format"] = formatted

    tokens = sum(s["tokens"] for s in samples)
    result = MathEvalResult(
        task=task.name,
        num_problems=len(rows),
        samples_per_problem=params.n,
        strict_accuracy=_mean(strict_verdicts),
        flexible_accuracy=_mean(flexible_verdicts),
        majority_accuracy=_mean(majority_verdicts(samples, len(rows))),
        format_rate=_mean(formats),
        unjudged=sum(v is None for v in flexible_verdicts),
        mean_completion_tokens=tokens / len(samples) if samples else 0.0,
        seconds_per_problem=seconds / len(rows) if rows else 0.0,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
    )
    return result, samples


def majority_verdicts(samples: Sequence[dict[str, Any]], num_problems: int) -> list[float | None]:
    """Per problem, the verdict of its most frequent flexible answer (first seen wins ties).

    >>> samples = [{"problem": 0, "flexible_answer": a, "flexible_correct": c}
    ...            for a, c in [("3", 0.0), ("4", 1.0), ("4", 1.0)]]
    >>> majority_verdicts(samples, 1)
    [1.0]
    """
    by_problem: dict[int, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample["flexible_answer"] is not None:
            by_problem.setdefault(sample["problem"], []).append(sample)
    verdicts: list[float | None] = []
    for problem in range(num_problems):
        answered = by_problem.get(problem)
        if not answered:
            verdicts.append(0.0)  # no answer at all: a judged failure
            continue
        # Counter keeps first-seen order, and most_common is stable: first seen wins ties.
        winner, _ = Counter(s["flexible_answer"] for s in answered).most_common(1)[0]
        verdicts.append(
            next(s["flexible_correct"] for s in answered if s["flexible_answer"] == winner)
        )
    return verdicts


def _mean(values: Sequence[float | None]) -> float:
    judged = [v for v in values if v is not None]
    return sum(judged) / len(judged) if judged else 0.0
