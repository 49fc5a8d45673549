"""DLR step time split into sample / decode / reward / update, with value-head filtering on vs off.

Runs the same DLR setting twice in one process, on the demo's tiny main model: once
decoding all G latents per question (K = G) and once decoding the value head's top K, and
prints seconds per step for each phase and the main-model tokens decoded per step, with
the ratios filtered / unfiltered.

    python benchmarks/dlr_step.py [--steps 10] [--group-size 8] [--decode-k 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from tempfile import TemporaryDirectory

from latentrl.config import DemoConfig, DLRConfig, load_config
from latentrl.pretrained import pretrained_tiny_model
from latentrl.trainers.dlr import DLRTrainer
from latentrl.trainers.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("sample_time", "decode_time", "reward_time", "update_time", "step_time")


def run(model_dir: Path, overrides: list[str]) -> dict[str, float]:
    with TemporaryDirectory() as out:
        cfg = load_config(
            DLRConfig, ROOT / "configs" / "dlr_arith_tiny.yaml",
            [f"main_model={model_dir}", f"output_dir={out}", "loop.checkpoint_every=0", *overrides],
        )  # fmt: skip
        trainer = DLRTrainer(cfg)
        trainer.setup()
        trainer.train()
        trainer.engine.close()
        rows = read_metrics(Path(out) / "metrics.jsonl")[1:]  # the first step warms up
    keys = (*PHASES, "main_tokens_decoded")
    return {key: statistics.mean(row[key] for row in rows) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--decode-k", type=int, default=2)
    args = parser.parse_args()
    demo = load_config(DemoConfig, ROOT / "configs" / "demo.yaml")
    model_dir = pretrained_tiny_model(demo.task.name, demo.task.options, demo.model, demo.pretrain)
    # Up to 48 tokens a decode, as for a main model that writes worked solutions.
    options = ", ".join(f"{k}: {v}" for k, v in demo.task.options.items())
    common = [
        f"loop.steps={args.steps}",
        f"group_size={args.group_size}",
        f"task.options={{{options}}}",
        "decode_max_tokens=48",
    ]
    full = run(model_dir, [*common, f"decode_k={args.group_size}"])
    filtered = run(model_dir, [*common, f"decode_k={args.decode_k}"])
    print(
        f"DLR step on {model_dir.name}: 64 questions x G={args.group_size}, mean of steps 2..{args.steps}"
    )
    print(f"{'':<22}{'K=G (all)':>12}{f'K={args.decode_k}':>12}{'ratio':>8}")
    for key in (*PHASES, "main_tokens_decoded"):
        print(f"{key:<22}{full[key]:>12.3f}{filtered[key]:>12.3f}{filtered[key] / full[key]:>8.2f}")
    print(f"decodes saved by the value head: {1 - args.decode_k / args.group_size:.0%}")


if __name__ == "__main__":
    main()
