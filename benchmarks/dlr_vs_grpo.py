"""DLR vs token-level GRPO on the same frozen main model and task, same wall-clock budget.

Prints, in one run: held-out accuracy before/after, seconds per step, peak memory (RSS),
main-model tokens decoded and trainable parameters, with the ratios DLR/GRPO.

- DLR runs its recipe as shipped (``--dlr-config``: the supervised warm start, then its RL
  steps), and the seconds it trains for are GRPO's budget (``--grpo-config``, a LoRA
  adapter through TRL): TRL's trainer is stopped when they are spent.
- The main model is the DLR config's ``main_model`` (e.g. ``smollm2-135m-instruct`` in
  ``configs/dlr_arith_smollm2.yaml``). Without one, a tiny main model is pre-trained to
  convergence first, and the script measures that: one further supervised epoch must move
  held-out accuracy by less than 2 points, so neither method wins by merely finishing the
  pre-training.
- Each method runs in its own process (its peak RSS is its own) and reports back in JSON.
- Both decode through transformers (DLR through latentrl's ``hf`` rollout backend, GRPO
  through TRL's ``generate``), greedy held-out accuracy on the same problems with the same
  token limit, judged by the same correctness reward. Each is asked as it trains: DLR with
  the task's plain prompt (its latents go there), GRPO as its config says (the chat
  template, where the model has one), so their "before" can differ.
- GRPO trains on the DLR config's task and options.
- ``--seeds``: each method trains once per seed (its config's ``seed``) on the same main
  model; the table is printed per seed, then the accuracies' mean and range over seeds.
- Each finished run leaves ``OUTPUT/METHOD-SEED.json`` (with what it ran with) and its log
  in ``--output-dir``; later calls reuse them, so an interrupted run goes on where it
  stopped, and deleting one file reruns that method at that seed.

    python benchmarks/dlr_vs_grpo.py [--eval-problems 500] [--seeds 0 1 2] [--output-dir DIR]
    python benchmarks/dlr_vs_grpo.py --dlr-config configs/dlr_arith_smollm2.yaml \\
        --grpo-config configs/grpo_arith_smollm2.yaml --eval-problems 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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
from latentrl.io import config_identity, finished_run, write_json
from latentrl.seeds import mean_and_range

ROOT = Path(__file__).resolve().parents[1]
DLR_CONFIG = ROOT / "configs" / "dlr_arith_tiny.yaml"
GRPO_CONFIG = ROOT / "configs" / "grpo_arith_tiny.yaml"
# The tiny main model: small enough to pre-train to convergence in a few CPU minutes. Half
# its examples read the worked steps between latent markers before the answer cue, as the
# demo's main model does: the slot where the DLR recipe puts its latents.
MAIN_MODEL = TinyModelConfig(vocab_size=384, hidden_size=128, num_layers=2, num_heads=2)
MAIN_PRETRAIN = PretrainConfig(
    steps=800, batch_size=64, learning_rate=3e-3, num_examples=20000, thought_rate=0.5
)
CONVERGED_POINTS = 2.0
# The further epoch starts from a tenth of the pre-training rate: the schedule that built
# the model ended near zero, so its full peak rate would re-heat it rather than continue it.
FURTHER_EPOCH_LR_FACTOR = 0.1
DLR_PHASES = ("sample_time", "decode_time", "reward_time", "update_time")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def grpo_config(args, main_model: str, overrides: Sequence[str] = ()) -> GRPOTrainConfig:
    """The GRPO config on the DLR config's task and options, for ``main_model``."""
    dlr = load_config(DLRConfig, args.dlr_config)
    options = [f"task.options.{key}={value}" for key, value in dlr.task.options.items()]
    return load_config(
        GRPOTrainConfig,
        args.grpo_config,
        [f"model={main_model}", f"task.name={dlr.task.name}", *options, *overrides],
    )


def greedy_accuracy(model: str, cfg: GRPOTrainConfig, problems: int, max_tokens: int) -> float:
    """Flexible (correctness-reward) greedy accuracy on the first held-out problems, asked
    as ``cfg`` trains (its task, chat template and instruction)."""
    from transformers import AutoTokenizer

    from latentrl.eval.math import evaluate_math
    from latentrl.models.named import resolve_model
    from latentrl.prompts import configured_task, use_chat_template, with_prompts
    from latentrl.rollout import SamplingParams, make_engine

    task = configured_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    chat = use_chat_template(tokenizer, cfg.chat_template)
    rows = with_prompts(
        task, task.load("test", limit=problems, **cfg.task.options), tokenizer, chat
    )
    engine = make_engine(model, RolloutConfig(backend="hf"))
    try:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        result, _ = evaluate_math(engine, tokenizer, task, rows, params)
    finally:
        engine.close()
    return result.flexible_accuracy


# ---- the two methods, each in its own process ---------------------------------------------


def run_dlr(args, main_model: str, out: Path) -> dict:
    """The recipe's warm start and RL steps (DLR sets the budget)."""
    from latentrl.trainers.dlr import DLRTrainer
    from latentrl.trainers.metrics import read_metrics

    cfg = load_config(DLRConfig, args.dlr_config, [
        f"main_model={main_model}", f"output_dir={out}", f"eval_problems={args.eval_problems}",
        "loop.checkpoint_every=0", "eval_every=0", "rollout.backend=hf", f"seed={args.seed}",
    ])  # fmt: skip
    trainer = DLRTrainer(cfg)
    trainer.setup()
    before = trainer.evaluate(with_plugin=False)["accuracy"]
    started = time.perf_counter()
    trainer.warm_start()
    warm_start_s = time.perf_counter() - started
    warm_started = trainer.evaluate(with_plugin=True)["accuracy"]  # outside the budget
    rl_started = time.perf_counter()
    trainer.train()
    train_s = warm_start_s + time.perf_counter() - rl_started
    after = trainer.evaluate(with_plugin=True)["accuracy"]
    trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    trainer.cleanup()  # also proves the main model bit-identical
    metrics = read_metrics(out / "metrics.jsonl")
    timed = metrics[1:] or metrics  # the first step warms up
    return {
        "before": before,
        "warm_started": warm_started,
        "after": after,
        "steps": trainer.state.step,
        "train_s": train_s,
        "warm_start_s": warm_start_s,
        **{phase: statistics.mean(row[phase] for row in timed) for phase in DLR_PHASES},
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


def run_grpo(args, main_model: str, out: Path) -> dict:
    from latentrl.models.loading import merge_adapter
    from latentrl.trainers.grpo import build_trainer

    max_tokens = load_config(DLRConfig, args.dlr_config).decode_max_tokens
    # Steps without end, so that the budget stops GRPO as it stops DLR; TRL's linear decay
    # over them leaves the rate constant.
    cfg = grpo_config(args, main_model, [f"output_dir={out}", f"seed={args.seed}", "steps=1000000"])
    before = greedy_accuracy(main_model, cfg, args.eval_problems, max_tokens)
    trainer = build_trainer(cfg)
    trainer.add_callback(TimeBudget(args.budget_s))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    completions_per_step = cfg.questions_per_step * cfg.num_generations
    steps = [row for row in trainer.state.log_history if "completions/mean_length" in row]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.model.save_pretrained(out / "adapter")
    merged = merge_adapter(main_model, str(out / "adapter"), out / "merged")
    after = greedy_accuracy(str(merged), cfg, args.eval_problems, max_tokens)
    return {
        "before": before,
        "warm_started": None,
        "after": after,
        "steps": trainer.state.global_step,
        "train_s": train_s,
        "warm_start_s": 0.0,
        **dict.fromkeys(DLR_PHASES),
        "main_tokens_decoded": round(
            sum(row["completions/mean_length"] for row in steps) * completions_per_step
        ),
        "trainable_params": trainable,
    }


METHODS = {"dlr": run_dlr, "grpo": run_grpo}


def child(args) -> None:
    with tempfile.TemporaryDirectory(prefix=f"latentrl-{args.child}-") as out:
        report = METHODS[args.child](args, args.main_model, Path(out))
    report["peak_rss_mb"] = peak_rss_mb()
    report["ran_with"] = ran_with(args, args.main_model, args.seed, args.budget_s)
    write_json(args.result, report)


def ran_with(args, main_model: str, seed: int, budget_s: float) -> dict:
    """What a report depends on beyond the code: a finished run is reused only if it matches."""
    return {
        "main_model": main_model,
        "dlr_config": config_identity(args.dlr_config),
        "grpo_config": config_identity(args.grpo_config),
        "eval_problems": args.eval_problems,
        "seed": seed,
        "budget_s": budget_s,
    }


def run_in_own_process(
    method: str, main_model: str, args, seed: int, budget_s: float = 0.0
) -> dict:
    """One method at one seed in its own process, or its finished run in ``--output-dir``."""
    result = args.output_dir / f"{method}-{seed}.json"
    try:
        report = finished_run(result, ran_with(args, main_model, seed, budget_s))
    except ValueError as mismatch:
        sys.exit(str(mismatch))
    if report is not None:
        return report
    args.output_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, __file__, "--child", method, "--main-model", main_model,
        "--dlr-config", str(args.dlr_config), "--grpo-config", str(args.grpo_config),
        "--budget-s", str(budget_s), "--eval-problems", str(args.eval_problems),
        "--seed", str(seed), "--result", str(result),
    ]  # fmt: skip
    log = args.output_dir / f"{method}-{seed}.log"
    with log.open("w") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        sys.exit(f"{method} failed (exit {finished.returncode}):\n{log.read_text()[-4000:]}")
    return json.loads(result.read_text())


# ---- the tiny main model, pre-trained to convergence ---------------------------------------


def converged_main_model(args) -> str:
    """Pre-train (cached) the tiny main model; measure a further epoch's effect on accuracy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentrl.models.tiny import pretrain, pretraining_examples
    from latentrl.pretrained import pretrained_tiny_model
    from latentrl.tasks import get_task

    dlr = load_config(DLRConfig, args.dlr_config)
    options = dlr.task.options
    main_model = pretrained_tiny_model(
        dlr.task.name, options, MAIN_MODEL, MAIN_PRETRAIN, progress=False
    )
    epoch_steps = MAIN_PRETRAIN.num_examples // MAIN_PRETRAIN.batch_size
    further = PretrainConfig(
        steps=epoch_steps,
        batch_size=MAIN_PRETRAIN.batch_size,
        learning_rate=MAIN_PRETRAIN.learning_rate * FURTHER_EPOCH_LR_FACTOR,
        num_examples=MAIN_PRETRAIN.num_examples,
        thought_rate=MAIN_PRETRAIN.thought_rate,
        seed=MAIN_PRETRAIN.seed + 1,
    )
    task = get_task(dlr.task.name)
    rows = task.load("train", limit=further.num_examples, **options)
    model = AutoModelForCausalLM.from_pretrained(main_model)
    tokenizer = AutoTokenizer.from_pretrained(main_model)
    pretrain(model, tokenizer, pretraining_examples(task, rows, further), further, progress=False)
    with tempfile.TemporaryDirectory(prefix="latentrl-further-epoch-") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        asked = grpo_config(args, folder)
        after_epoch = greedy_accuracy(folder, asked, args.eval_problems, dlr.decode_max_tokens)
    asked = grpo_config(args, str(main_model))
    accuracy = greedy_accuracy(str(main_model), asked, args.eval_problems, dlr.decode_max_tokens)
    moved = 100 * (after_epoch - accuracy)
    verdict = "converged" if abs(moved) < CONVERGED_POINTS else "NOT converged"
    print(
        f"main model {main_model.name} ({MAIN_MODEL.num_layers} layers x {MAIN_MODEL.hidden_size}, "
        f"{MAIN_PRETRAIN.steps} steps x {MAIN_PRETRAIN.batch_size}): held-out {accuracy:.1%}; "
        f"one further epoch ({epoch_steps} steps, lr {further.learning_rate:g}): "
        f"{after_epoch:.1%} ({moved:+.1f} points, {verdict}: |change| < {CONVERGED_POINTS:g})"
    )
    return str(main_model)


ROWS = (
    ("held-out accuracy before", "before", "{:.1%}"),
    ("held-out, warm-started", "warm_started", "{:.1%}"),
    ("held-out accuracy after", "after", "{:.1%}"),
    ("training seconds", "train_s", "{:.0f}"),
    ("of which warm start", "warm_start_s", "{:.0f}"),
    ("RL steps", "steps", "{:d}"),
    ("seconds per RL step", "seconds_per_step", "{:.3f}"),
    *((f"  {phase.removesuffix('_time')}", phase, "{:.3f}") for phase in DLR_PHASES),
    ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("main-model tokens decoded", "main_tokens_decoded", "{:d}"),
    ("trainable parameters", "trainable_params", "{:d}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlr-config", type=Path, default=DLR_CONFIG)
    parser.add_argument("--grpo-config", type=Path, default=GRPO_CONFIG)
    parser.add_argument("--eval-problems", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "dlr_vs_grpo")
    parser.add_argument("--budget-s", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--main-model", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    dlr = load_config(DLRConfig, args.dlr_config)
    main_model = dlr.main_model or converged_main_model(args)
    print(
        f"{main_model}, {dlr.task.name} {dlr.task.options}, GRPO trains as many seconds as "
        f"DLR's recipe took, greedy accuracy on {args.eval_problems} held-out problems"
    )
    after: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in args.seeds:
        dlr_report = run_in_own_process("dlr", main_model, args, seed)
        results = {
            "dlr": dlr_report,
            "grpo": run_in_own_process("grpo", main_model, args, seed, dlr_report["train_s"]),
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
        rl_s = report["train_s"] - report["warm_start_s"]
        report["seconds_per_step"] = rl_s / max(1, report["steps"])
    print(f"{'':<28}{'DLR':>12}{'GRPO':>12}{'DLR/GRPO':>10}")
    for label, key, style in ROWS:
        d, g = results["dlr"][key], results["grpo"][key]
        ratio = f"{d / g:.2f}" if d is not None and g else "-"
        cells = [style.format(v) if v is not None else "-" for v in (d, g)]
        print(f"{label:<28}{cells[0]:>12}{cells[1]:>12}{ratio:>10}")


if __name__ == "__main__":
    main()
