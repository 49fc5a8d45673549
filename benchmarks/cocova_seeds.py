"""CoCoVa over seeds: the recipe, the LLaVA-style baseline and the ablations, at equal steps.

    python benchmarks/cocova_seeds.py [--config configs/cocova_shapes_tiny.yaml]
        [--seeds 0 1 2] [--variants cocova llava no_infonce no_diffusion no_selection]
        [--output-dir runs/cocova_seeds] [overrides ...]

Each (variant, seed) is one ``latentrl train cocova --config C seed=S <variant overrides>``
in its own process, written to ``OUTPUT_DIR/VARIANT-S``; a run whose ``summary.json`` is
already there is read, not repeated (so an interrupted sweep continues). Every variant
trains the config's number of steps. Prints, per variant, held-out accuracy per seed and
level with the steps and training seconds, then the mean and range over seeds, beside the
majority answer and the question-only baseline of the same runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from latentrl.seeds import mean_and_range

VARIANTS = {
    "cocova": [],
    "llava": ["plugin.architecture=llava"],
    "no_infonce": ["infonce_weight=0"],
    "no_diffusion": ["diffusion_weight=0"],
    "no_selection": ["plugin.token_selection=false"],
}
"""Variant name -> overrides of the config."""
COLUMNS = ["", "_level_1", "_level_2", "_level_3"]


def run(config: str, seed: int, overrides: list[str], output_dir: Path) -> dict:
    """The run's summary, training it first unless it is already there."""
    summary = output_dir / "summary.json"
    if not summary.is_file():
        command = [sys.executable, "-m", "latentrl.cli", "train", "cocova", "--config", config,
                   f"seed={seed}", f"output_dir={output_dir}", *overrides]  # fmt: skip
        print(" ".join(command[2:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cocova_shapes_tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output-dir", type=Path, default=Path("runs/cocova_seeds"))
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()

    results = {
        (variant, seed): run(
            args.config,
            seed,
            VARIANTS[variant] + args.overrides,
            args.output_dir / f"{variant}-{seed}",
        )  # fmt: skip
        for variant in args.variants
        for seed in args.seeds
    }
    print(f"\nCoCoVa on {args.config}, {os.cpu_count()} CPU cores; held-out accuracy")
    header = f"{'':<30}{'steps':>7}{'seconds':>9}" + "".join(
        f"{name:>22}" for name in ("all", "level 1", "level 2", "level 3")
    )
    print(header)
    baselines = {
        "majority answer": "majority_accuracy",
        "question only": "question_only_accuracy",
    }
    for variant in args.variants:
        runs = [results[variant, seed] for seed in args.seeds]
        for seed, summary in zip(args.seeds, runs, strict=True):
            cells = "".join(f"{100 * summary['accuracy' + c]:>21.1f}%" for c in COLUMNS)
            label = f"{variant}, seed {seed}"
            print(f"{label:<30}{summary['steps']:>7}{summary['train_seconds']:>9.0f}{cells}")
        cells = "".join(f"{mean_and_range([s['accuracy' + c] for s in runs]):>22}" for c in COLUMNS)
        print(f"{variant + ', mean (range)':<30}{'':>16}{cells}")
    runs = [results[args.variants[0], seed] for seed in args.seeds]
    for label, key in baselines.items():
        cells = "".join(f"{mean_and_range([s[key + c] for s in runs]):>22}" for c in COLUMNS)
        print(f"{label + ', mean (range)':<30}{'':>16}{cells}")


if __name__ == "__main__":
    main()
