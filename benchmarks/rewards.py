"""Correctness-reward throughput: process pool vs in-process, on 5,276 real GSM8K completions.

Scores the four model completions per GSM8K test question in
``shared/data/gsm8k/example_model_solutions.jsonl`` with ``CorrectnessReward(num_workers=0)``
and ``CorrectnessReward(num_workers=os.cpu_count())`` in one run, and prints completions/s for
each and the ratio pool / in-process. Two settings:

* default (``use_fast_path=True``): plain-number answers are compared exactly in the calling
  process and never reach the pool, so the two figures should match (ratio about 1);
* ``use_fast_path=False``: every item goes through math-verify, the case a pool is for.

Pool start-up (spawning workers that import math-verify) is measured separately and excluded
from the rates; each rate is the best of ``--repeats`` runs, and agreement with the authors'
``is_correct`` is printed as a check that both paths compute the same thing.

    python benchmarks/rewards.py [--data shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from latentrl.rewards import CorrectnessReward, extract_answer

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def load(data_dir: Path) -> tuple[list[str], list[str], list[bool]]:
    completions, golds, verdicts = [], [], []
    with (data_dir / "gsm8k" / "example_model_solutions.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            gold = extract_answer(row["ground_truth"], order=["a_colon"])
            for model in MODELS:
                completions.append(row[model]["solution"])
                golds.append(gold)
                verdicts.append(row[model]["is_correct"])
    return completions, golds, verdicts


def measure(
    reward: CorrectnessReward, completions, golds, verdicts, repeats: int
) -> tuple[float, float]:
    """(best completions/s, agreement with is_correct)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        scores = reward(None, completions, answer=golds)
        best = min(best, time.perf_counter() - start)
    agree = sum(s == float(v) for s, v in zip(scores, verdicts, strict=True)) / len(verdicts)
    return len(completions) / best, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("LATENTRL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--data", type=Path, default=Path(default_data), help="the shared/data folder"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    completions, golds, verdicts = load(args.data)
    workers = os.cpu_count() or 1
    print(f"{len(completions)} completions, {workers} CPU cores, best of {args.repeats}")
    for fast_path in (True, False):
        single = CorrectnessReward(num_workers=0, use_fast_path=fast_path)
        single(None, completions[:8], answer=golds[:8])  # import and warm math-verify
        single_rate, single_agree = measure(single, completions, golds, verdicts, args.repeats)

        with CorrectnessReward(num_workers=workers, use_fast_path=fast_path) as pool:
            start = time.perf_counter()
            pool._ensure_pool()  # start the workers now, so start-up is not in the rate
            startup = time.perf_counter() - start
            pool_rate, pool_agree = measure(pool, completions, golds, verdicts, args.repeats)

        print(f"use_fast_path={fast_path}:")
        print(
            f"  in-process (num_workers=0): {single_rate:8.0f} completions/s  agreement {single_agree:.2%}"
        )
        print(
            f"  pool (num_workers={workers}):      {pool_rate:8.0f} completions/s  agreement {pool_agree:.2%}"
            f"  (pool start-up {startup:.2f} s)"
        )
        print(f"  ratio pool / in-process: {pool_rate / single_rate:.2f}")


if __name__ == "__main__":
    main()
