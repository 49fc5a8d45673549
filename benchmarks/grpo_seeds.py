"""Token-level GRPO (TRL, a LoRA adapter) over seeds: held-out accuracy before and after.

    python benchmarks/grpo_seeds.py --config configs/grpo_arith_smollm2.yaml \\
        [--seeds 0 1 2] [--eval-problems 300]

- The base model is evaluated once (greedy decoding does not depend on the seed); each
  seed trains ``latentrl train grpo --config C seed=S`` in its own process (its peak RSS is
  its own) and its adapter is evaluated on the same held-out problems, asked the same way
  (the config's task, chat template and instruction; greedy, the config's completion length),
  so before/after pairs are paired problem by problem.
- Seconds per step are TRL's own ``step_time`` (generation, rewards and the update), the
  mean over the run's steps.
- Prints one row per seed, then the accuracies' mean and range over seeds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from latentrl.config import GRPOTrainConfig, load_config
from latentrl.seeds import mean_and_range
from latentrl.trainers.grpo import eval_overrides, train


def child_train(config: str, seed: int, output_dir: str) -> None:
    """Train one seed in this process; print its step time and peak RSS as JSON."""
    cfg = load_config(GRPOTrainConfig, config, [f"seed={seed}", f"output_dir={output_dir}"])
    trainer = train(cfg)
    step_times = [e["step_time"] for e in trainer.state.log_history if "step_time" in e]
    report = {
        "seconds_per_step": sum(step_times) / len(step_times),
        "steps": len(step_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB
    }
    print("REPORT " + json.dumps(report))


def run_child(config: str, seed: int, output_dir: Path) -> dict:
    command = [sys.executable, __file__, "--config", config, "--child-seed", str(seed),
               "--child-output", str(output_dir)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    reports = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    if done.returncode != 0 or not reports:
        sys.exit(f"seed {seed}: training failed:\n{done.stderr[-3000:]}")
    return json.loads(reports[-1].removeprefix("REPORT "))


def accuracy(cfg: GRPOTrainConfig, problems: int, output_dir: Path, adapter: Path | None) -> float:
    """Greedy held-out accuracy (flexible) through ``latentrl eval``."""
    command = [sys.executable, "-m", "latentrl.cli", "eval", "--model", cfg.model,
               "--limit", str(problems), "--output-dir", str(output_dir),
               f"max_tokens={cfg.max_completion_length}", *eval_overrides(cfg)]  # fmt: skip
    if adapter is not None:
        command += ["--adapter", str(adapter)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"latentrl eval failed:\n{done.stderr[-3000:]}")
    return json.loads((output_dir / "summary.json").read_text())["flexible_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-problems", type=int, default=300)
    parser.add_argument("--output-dir", help="keep the runs here (default: a scratch folder)")
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_seed is not None:
        child_train(args.config, args.child_seed, args.child_output)
        return

    cfg = load_config(GRPOTrainConfig, args.config)
    with tempfile.TemporaryDirectory(prefix="grpo-seeds-") as scratch:
        out = Path(args.output_dir or scratch)
        before = accuracy(cfg, args.eval_problems, out / "base-eval", adapter=None)
        print(f"{cfg.model} on {cfg.task.name} {cfg.task.options}: {before:.1%} before training "
              f"({args.eval_problems} held-out problems, greedy)", flush=True)  # fmt: skip
        rows = {}
        for seed in args.seeds:
            run = out / f"seed-{seed}"
            report = run_child(args.config, seed, run)
            after = accuracy(cfg, args.eval_problems, run / "eval", adapter=run / "adapter")
            rows[seed] = {**report, "after": after}
            print(f"seed {seed}: {after:.1%} after {report['steps']} steps, "
                  f"{report['seconds_per_step']:.1f} s/step, "
                  f"peak RSS {report['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    print_table(before, rows)


def print_table(before: float, rows: dict[int, dict]) -> None:
    afters = [row["after"] for row in rows.values()]
    header = "".join(f"{f'seed {s}':>9}" for s in rows)
    print(f"\n{'held-out accuracy':<22}{header}   mean (range)")
    print(f"{'before (base model)':<22}" + f"{before:>9.1%}" * len(rows)
          + f"   {mean_and_range([before] * len(rows))}")  # fmt: skip
    print(f"{'after GRPO':<22}" + "".join(f"{a:>9.1%}" for a in afters)
          + f"   {mean_and_range(afters)}")  # fmt: skip
    for key, label, fmt in [("seconds_per_step", "seconds per step", "{:>9.1f}"),
                            ("peak_rss_mb", "peak RSS (MB)", "{:>9.0f}")]:  # fmt: skip
        print(f"{label:<22}" + "".join(fmt.format(row[key]) for row in rows.values()))


if __name__ == "__main__":
    main()
