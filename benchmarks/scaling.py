"""DLR step time and samples/s with 1 vs 2 processes (``accelerate launch``), one run.

Both runs train the same global batch (64 questions x G latents a step) on the demo's tiny
main model; with 2 processes each decodes and updates on half of it. Prints the mean of
steps 2..N for each process count and the ratio 2 / 1.

    python benchmarks/scaling.py [--steps 6] [--backend hf|vllm]
        [--real-main PATH --real-assistant PATH]

Where a GPU is present, it also times the real-size setting (configs/dlr_gsm8k_qwen.yaml)
in one process on one GPU; that needs the two models' weights (Hub ids or local folders),
passed as --real-main and --real-assistant, and the GSM8K files (../shared/data/gsm8k).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from latentrl.config import DemoConfig, load_config
from latentrl.pretrained import pretrained_tiny_model
from latentrl.trainers.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def run(processes: int, overrides: list[str], config: str = "dlr_arith_tiny.yaml") -> float:
    """Mean step time of steps 2.. of a DLR run with ``processes`` processes."""
    with TemporaryDirectory() as out:
        launcher = [
            "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        ] if processes > 1 else []  # fmt: skip
        command = [
            sys.executable, *launcher, "-m", "latentrl.cli", "train", "dlr",
            "--config", str(ROOT / "configs" / config), f"output_dir={out}",
            *overrides,
        ]  # fmt: skip
        threads = max(1, (os.cpu_count() or 1) // processes)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        rows = read_metrics(Path(out) / "metrics.jsonl")[1:]  # the first step warms up
    return statistics.mean(row["step_time"] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--backend", default="hf", help="rollout backend of every process")
    parser.add_argument("--real-main", help="main model of the real-size GPU row")
    parser.add_argument("--real-assistant", help="assistant of the real-size GPU row")
    args = parser.parse_args()
    demo = load_config(DemoConfig, ROOT / "configs" / "demo.yaml")
    model_dir = pretrained_tiny_model(demo.task.name, demo.task.options, demo.model, demo.pretrain)
    options = ", ".join(f"{k}: {v}" for k, v in demo.task.options.items())
    overrides = [
        f"main_model={model_dir}", f"loop.steps={args.steps}", f"group_size={args.group_size}",
        f"decode_k={args.group_size}", f"task.options={{{options}}}", "decode_max_tokens=48",
        "eval_problems=16", "loop.checkpoint_every=0", f"rollout.backend={args.backend}",
        "warm_start_steps=0",
    ]  # fmt: skip
    samples = 64 * args.group_size
    one, two = run(1, overrides), run(2, overrides)
    print(
        f"DLR on {model_dir.name}, {args.backend} backend, 64 questions x G={args.group_size} "
        f"a step, {os.cpu_count()} CPU cores, mean of steps 2..{args.steps}"
    )
    print(f"{'':<14}{'1 process':>12}{'2 processes':>14}{'ratio':>8}")
    print(f"{'step_time':<14}{one:>12.3f}{two:>14.3f}{two / one:>8.2f}")
    print(f"{'samples/s':<14}{samples / one:>12.1f}{samples / two:>14.1f}{one / two:>8.2f}")
    real_size_on_one_gpu(args)


def real_size_on_one_gpu(args: argparse.Namespace) -> None:
    import torch

    if not torch.cuda.is_available():
        print("\nreal-size row skipped: no GPU here")
        return
    if not (args.real_main and args.real_assistant):
        print("\nreal-size row skipped: pass --real-main and --real-assistant (weights)")
        return
    gsm8k = ROOT.parent / "shared" / "data" / "gsm8k"
    overrides = [
        f"main_model={args.real_main}", f"assistant_model={args.real_assistant}",
        f"loop.steps={args.steps}", "warm_start_steps=0", "eval_problems=16", "eval_every=0",
        "loop.checkpoint_every=0", "loop.report_to=[]", f"task.options.data_dir={gsm8k}",
    ]  # fmt: skip
    step_time = run(1, overrides, config="dlr_gsm8k_qwen.yaml")
    samples = 64 * 8  # the config's questions_per_step x group_size
    print(f"\nreal-size config (dlr_gsm8k_qwen.yaml), 1 GPU ({torch.cuda.get_device_name()}):")
    print(f"{'step_time':<14}{step_time:>12.3f}")
    print(f"{'samples/s':<14}{samples / step_time:>12.1f}")


if __name__ == "__main__":
    main()
