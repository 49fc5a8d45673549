"""Agreement with the GSM8K authors' verdicts on 5,276 real model completions.

The data is ``shared/data/gsm8k/example_model_solutions.jsonl``, found beside the repository
(``<repo>/../shared/data``) or under ``$LATENTRL_SHARED_DATA`` (the ``shared/data`` folder).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from latentrl.rewards import CorrectnessReward, extract_answer

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def solutions_file() -> Path:
    data = Path(os.environ.get("LATENTRL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return data / "gsm8k" / "example_model_solutions.jsonl"


@pytest.fixture(scope="module")
def graded() -> tuple[list[str], list[str], list[bool]]:
    """(completions, gold answers, the authors' is_correct), one per model completion."""
    path = solutions_file()
    if not path.is_file():
        pytest.skip(f"GSM8K example solutions not found at {path} (set LATENTRL_SHARED_DATA)")
    completions, golds, verdicts = [], [], []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            gold = extract_answer(row["ground_truth"], order=["a_colon"])  # ends "A: 18"
            assert gold is not None, row["ground_truth"]
            for model in MODELS:
                completions.append(row[model]["solution"])
                golds.append(gold)
                verdicts.append(row[model]["is_correct"])
    assert len(completions) == 5276
    return completions, golds, verdicts


def agreement(reward: CorrectnessReward, graded) -> tuple[float, float]:
    completions, golds, verdicts = graded
    start = time.perf_counter()
    scores = reward(None, completions, answer=golds)
    seconds = time.perf_counter() - start
    disagreements = [
        i for i, (s, v) in enumerate(zip(scores, verdicts, strict=True)) if s != float(v)
    ]
    share = 1 - len(disagreements) / len(completions)
    print(
        f"\n{type(reward).__name__}(use_fast_path={reward.use_fast_path}): {len(completions)} completions "
        f"in {seconds:.2f} s ({len(completions) / seconds:.0f}/s); agreement {share:.2%}, "
        f"{len(disagreements)} disagreements; stats {reward.stats}"
    )
    for i in disagreements[:5]:
        print(f"  #{i}: reward {scores[i]}, is_correct {verdicts[i]}, gold {golds[i]!r}, "
              f"extracted {extract_answer(completions[i])!r}, ending {completions[i][-80:]!r}")  # fmt: skip
    return share, seconds


def test_agrees_with_authors(graded):
    share, seconds = agreement(CorrectnessReward(), graded)
    assert share >= 0.99
    assert seconds < 60


def test_math_verify_path_agrees_with_authors(graded):
    share, seconds = agreement(CorrectnessReward(use_fast_path=False), graded)
    assert share >= 0.99
    assert seconds < 60
