"""DLR vs token-level GRPO on the same frozen tiny main model, `arith`, same wall-clock budget.

Prints, in one run: held-out accuracy before/after, seconds per step, peak memory (RSS),
main-model tokens decoded and trainable parameters, with the ratios DLR/GRPO.

- The main model is pre-trained to convergence first, and the script measures that: one
  further supervised epoch must move held-out accuracy by less than 2 points, so neither
  method wins by merely finishing the pre-training.
- Each method runs in its own process (its peak RSS is its own) and reports back in JSON.
- Both decode through transformers (DLR through latentrl's ``hf`` rollout backend, GRPO
  through TRL's ``generate``), greedy held-out accuracy on the same problems with the same
  token limit, judged by the same correctness reward.
- DLR runs ``configs/dlr_arith_tiny.yaml`` and GRPO ``configs/grpo_arith_tiny.yaml``, both
  on the DLR config's task options; each trains until the budget is spent.

- ``--seeds``: each method trains once per seed (its config's ``seed``) on the same main
  model; the table is printed per seed, then the accuracies' mean and range over seeds.

    python benchmarks/dlr_vs_grpo.py [--budget-s 180] [--eval-problems 500] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from latentrl.config import (
    DLRConfig,
    GRPOTrainConfig,
    PretrainConfig,
    RolloutConfig,
    TinyModelConfig,
    load_config,
)
from latentrl.seeds import mean_and_range

ROOT = Path(__file__).resolve().parents[1]
DLR_CONFIG = ROOT / "configs" / "dlr_arith_tiny.yaml"
GRPO_CONFIG = ROOT / "configs" / "grpo_arith_tiny.yaml"
# The frozen main model: small enough to pre-train to convergence in a few CPU minutes.
MAIN_MODEL = TinyModelConfig(vocab_size=384, hidden_size=128, num_layers=2, num_heads=2)
MAIN_PRETRAIN = PretrainConfig(steps=800, batch_size=64, learning_rate=3e-3, num_examples=20000)
CONVERGED_POINTS = 2.0
# The further epoch starts from a tenth of the pre-training rate: the schedule that built
# the model ended near zero, so its full peak rate would re-heat it rather than continue it.
FURTHER_EPOCH_LR_FACTOR = 0.1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def greedy_accuracy(model_dir: Path, task_options: dict, problems: int, max_tokens: int) -> float:
    """Flexible (correctness-reward) greedy accuracy on the first held-out problems."""
    from latentrl.tasks import get_task
    from transformers import AutoTokenizer

    from latentrl.eval.math import evaluate_math
    from latentrl.rollout import SamplingParams, make_engine

    task = get_task("arith")
    rows = task.load("test", limit=problems, **task_options)
    engine = make_engine(model_dir, RolloutConfig(backend="hf"))
    try:
        result, _ = evaluate_math(
            engine,
            AutoTokenizer.from_pretrained(model_dir),
            task,
            rows,
            SamplingParams(temperature=0.0, max_tokens=max_tokens),
        )
    finally:
        engine.close()
    return result.flexible_accuracy


# ---- the two methods, each in its own process ---------------------------------------------


def run_dlr(main_model: str, budget_s: float, eval_problems: int, seed: int, out: Path) -> dict:
    from latentrl.trainers.common import read_metrics
    from latentrl.trainers.dlr import DLRTrainer

    cfg = load_config(DLRConfig, DLR_CONFIG, [
        f"main_model={main_model}", f"output_dir={out}", f"eval_problems={eval_problems}",
        "checkpoint_every=0", "rollout.backend=hf", f"seed={seed}",
        # RL alone, latents as a prefix: the setting this comparison was measured with (its
        # main model never saw the latent slot that the demo's reads).
        "warm_start_steps=0", "plugin.latent_position=prefix", "plugin.use_markers=false",
    ])  # fmt: skip
    trainer = DLRTrainer(cfg)
    trainer.setup()
    before = trainer.evaluate(with_plugin=False)["accuracy"]
    started = time.perf_counter()
    while time.perf_counter() - started < budget_s:
        trainer.cfg.steps = trainer.step + 1  # one more step each call, until the budget is spent
        trainer.train()
    train_s = time.perf_counter() - started
    after = trainer.evaluate(with_plugin=True)["accuracy"]
    trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    trainer.cleanup()  # also proves the main model bit-identical
    metrics = read_metrics(out / "metrics.jsonl")
    return {
        "before": before,
        "after": after,
        "steps": trainer.step,
        "train_s": train_s,
        "main_tokens_decoded": round(sum(row["main_tokens_decoded"] for row in metrics)),
        "trainable_params": trainable,
    }


class TimeBudget(TrainerCallback):
    """Stops a transformers/TRL trainer once ``budget_s`` seconds of training have run."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.started >= self.budget_s:
            control.should_training_stop = True


def run_grpo(main_model: str, budget_s: float, eval_problems: int, seed: int, out: Path) -> dict:
    from latentrl.eval.run import merge_adapter
    from latentrl.trainers.grpo import build_trainer

    dlr = load_config(DLRConfig, DLR_CONFIG)
    options = [f"task.options.{key}={value}" for key, value in dlr.task.options.items()]
    overrides = [f"model={main_model}", f"output_dir={out}", f"seed={seed}", *options]
    cfg = load_config(GRPOTrainConfig, GRPO_CONFIG, overrides)
    before = greedy_accuracy(
        Path(main_model), dlr.task.options, eval_problems, dlr.decode_max_tokens
    )
    trainer = build_trainer(cfg)
    trainer.add_callback(TimeBudget(budget_s))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    completions_per_step = cfg.questions_per_step * cfg.num_generations
    steps = [row for row in trainer.state.log_history if "completions/mean_length" in row]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.model.save_pretrained(out / "adapter")
    merged = merge_adapter(main_model, str(out / "adapter"), out / "merged")
    after = greedy_accuracy(merged, dlr.task.options, eval_problems, dlr.decode_max_tokens)
    return {
        "before": before,
        "after": after,
        "steps": trainer.state.global_step,
        "train_s": train_s,
        "main_tokens_decoded": round(
            sum(row["completions/mean_length"] for row in steps) * completions_per_step
        ),
        "trainable_params": trainable,
    }


METHODS = {"dlr": run_dlr, "grpo": run_grpo}


def child(
    method: str, main_model: str, budget_s: float, eval_problems: int, seed: int, result: Path
) -> None:
    with tempfile.TemporaryDirectory(prefix=f"latentrl-{method}-") as out:
        report = METHODS[method](main_model, budget_s, eval_problems, seed, Path(out))
    report["peak_rss_mb"] = peak_rss_mb()
    result.write_text(json.dumps(report))


def run_in_own_process(method: str, main_model: Path, args, seed: int, scratch: Path) -> dict:
    result = scratch / f"{method}-{seed}.json"
    command = [
        sys.executable, __file__, "--child", method, "--main-model", str(main_model),
        "--budget-s", str(args.budget_s), "--eval-problems", str(args.eval_problems),
        "--seed", str(seed), "--result", str(result),
    ]  # fmt: skip
    log = scratch / f"{method}-{seed}.log"
    with log.open("w") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        sys.exit(f"{method} failed (exit {finished.returncode}):\n{log.read_text()[-4000:]}")
    return json.loads(result.read_text())


# ---- the main model, pre-trained to convergence --------------------------------------------


def converged_main_model(task_options: dict, eval_problems: int, max_tokens: int) -> Path:
    """Pre-train (cached) the main model; measure a further epoch's effect on accuracy."""
    from latentrl.tasks import get_task
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentrl.models.tiny import pretrain, pretrained_tiny_model, pretraining_examples

    main_model = pretrained_tiny_model(
        "arith", task_options, MAIN_MODEL, MAIN_PRETRAIN, progress=False
    )
    epoch_steps = MAIN_PRETRAIN.num_examples // MAIN_PRETRAIN.batch_size
    further = PretrainConfig(
        steps=epoch_steps,
        batch_size=MAIN_PRETRAIN.batch_size,
        learning_rate=MAIN_PRETRAIN.learning_rate * FURTHER_EPOCH_LR_FACTOR,
        num_examples=MAIN_PRETRAIN.num_examples,
        seed=MAIN_PRETRAIN.seed + 1,
    )
    task = get_task("arith")
    rows = task.load("train", limit=further.num_examples, **task_options)
    model = AutoModelForCausalLM.from_pretrained(main_model)
    tokenizer = AutoTokenizer.from_pretrained(main_model)
    pretrain(model, tokenizer, pretraining_examples(task, rows, further), further, progress=False)
    with tempfile.TemporaryDirectory(prefix="latentrl-further-epoch-") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        after_epoch = greedy_accuracy(Path(folder), task_options, eval_problems, max_tokens)
    accuracy = greedy_accuracy(main_model, task_options, eval_problems, max_tokens)
    moved = 100 * (after_epoch - accuracy)
    verdict = "converged" if abs(moved) < CONVERGED_POINTS else "NOT converged"
    print(
        f"main model {main_model.name} ({MAIN_MODEL.num_layers} layers x {MAIN_MODEL.hidden_size}, "
        f"{MAIN_PRETRAIN.steps} steps x {MAIN_PRETRAIN.batch_size}): held-out {accuracy:.1%}; "
        f"one further epoch ({epoch_steps} steps, lr {further.learning_rate:g}): "
        f"{after_epoch:.1%} ({moved:+.1f} points, {verdict}: |change| < {CONVERGED_POINTS:g})"
    )
    return main_model


ROWS = (
    ("held-out accuracy before", "before", "{:.1%}"),
    ("held-out accuracy after", "after", "{:.1%}"),
    ("steps in the budget", "steps", "{:d}"),
    ("seconds per step", "seconds_per_step", "{:.3f}"),
    ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("main-model tokens decoded", "main_tokens_decoded", "{:d}"),
    ("trainable parameters", "trainable_params", "{:d}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=180.0, help="training seconds per method")
    parser.add_argument("--eval-problems", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--main-model", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(
            args.child, args.main_model, args.budget_s, args.eval_problems, args.seed, args.result
        )
        return

    dlr = load_config(DLRConfig, DLR_CONFIG)
    main_model = converged_main_model(dlr.task.options, args.eval_problems, dlr.decode_max_tokens)
    print(
        f"arith {dlr.task.options}, {args.budget_s:g} s of training each, "
        f"greedy accuracy on {args.eval_problems} held-out problems"
    )
    after: dict[str, list[float]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="latentrl-dlr-vs-grpo-") as scratch:
        for seed in args.seeds:
            results = {
                m: run_in_own_process(m, main_model, args, seed, Path(scratch)) for m in METHODS
            }
            print(f"\nseed {seed}")
            print_table(results)
            for method, report in results.items():
                after[method].append(report["after"])
    if len(args.seeds) > 1:
        print(f"\nheld-out accuracy after, over seeds {args.seeds}: mean (range)")
        for method, values in after.items():
            print(f"{method.upper():<6}{mean_and_range(values)}")


def print_table(results: dict[str, dict]) -> None:
    for report in results.values():
        report["seconds_per_step"] = report["train_s"] / max(1, report["steps"])
    print(f"{'':<28}{'DLR':>12}{'GRPO':>12}{'DLR/GRPO':>10}")
    for label, key, style in ROWS:
        d, g = results["dlr"][key], results["grpo"][key]
        ratio = f"{d / g:.2f}" if g else "-"
        print(f"{label:<28}{style.format(d):>12}{style.format(g):>12}{ratio:>10}")


if __name__ == "__main__":
    main()
