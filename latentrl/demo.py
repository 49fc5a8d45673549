"""``latentrl demo`` (``make demo``): DLR end to end on 2 CPU cores.

1. build a tiny Qwen2 main model and tokenizer for the task and pre-train it (cached);
2. freeze it and train a latent plugin for it with the DLR recipe of ``dlr_config``, once
   per seed of ``seeds`` (the task, rollout engine, held-out problems and run folder come
   from the demo's config, so the plugin is trained for exactly the model built in step 1);
3. print held-out accuracy of the frozen model alone, with the warm-started plugin (when
   the recipe warm-starts) and with the RL-trained plugin, per seed, with the mean and
   range over the seeds; each seed's plugin, ``summary.json``, ``metrics.jsonl`` and
   ``curves.png`` are in ``output_dir/seed-S``, the table over seeds in ``summary.json``;
4. after each seed, one line of what its plugin's latents name (``latentrl inspect``; the
   pictures are in ``output_dir/seed-S/inspect``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from latentrl.config import DemoConfig, DLRConfig, InspectConfig, load_config, save_config
from latentrl.inspection import run_inspect
from latentrl.io import write_json
from latentrl.pretrained import pretrained_tiny_model
from latentrl.rollout import make_engine
from latentrl.seeds import mean_and_range
from latentrl.trainers import dlr

INSPECT_QUESTIONS = 50


def run_demo(config_path: str | None, overrides: Sequence[str]) -> int:
    cfg = load_config(DemoConfig, config_path, overrides)
    # The recipe is checked before the model is built: a bad value fails in seconds.
    load_config(DLRConfig, cfg.dlr_config, cfg.dlr_overrides)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "demo.yaml")

    started = time.perf_counter()
    model_dir = pretrained_tiny_model(
        cfg.task.name, cfg.task.options, cfg.model, cfg.pretrain, cache_dir=cfg.cache_dir
    )
    print(
        f"tiny main model: {model_dir} ({time.perf_counter() - started:.0f} s, "
        "cached after the first run)"
    )
    accuracies: dict[int, dict[str, float]] = {}
    # One engine for every seed: the main model is frozen, and an engine start costs ~25 s.
    engine = make_engine(model_dir, cfg.rollout)
    try:
        for seed in cfg.seeds:
            print(f"\n== seed {seed} ==")
            recipe = load_config(DLRConfig, cfg.dlr_config, [*cfg.dlr_overrides, f"seed={seed}"])
            recipe.main_model = str(model_dir)
            recipe.task = cfg.task
            recipe.rollout = cfg.rollout
            recipe.eval_problems = cfg.eval_problems
            recipe.output_dir = str(run_dir / f"seed-{seed}")
            status = dlr.run(recipe, engine=engine)
            if status != 0:
                return status
            print(inspect_line(Path(recipe.output_dir), cfg))
            summary = json.loads((Path(recipe.output_dir) / "summary.json").read_text())
            accuracies[seed] = {
                name: result["accuracy"] for name, result in summary.items() if name != "steps"
            }
    finally:
        engine.close()
    print(seed_table(accuracies))
    write_json(run_dir / "summary.json", {f"seed {s}": row for s, row in accuracies.items()})
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; run folder {run_dir}")
    return 0


def inspect_line(seed_dir: Path, cfg: DemoConfig) -> str:
    """One line of what the seed's plugin's latents name (``latentrl inspect``); its
    pictures go to ``seed_dir/inspect``."""
    inspect_cfg = InspectConfig(
        plugin=str(seed_dir / "plugin"), task=cfg.task, limit=INSPECT_QUESTIONS,
        output_dir=str(seed_dir / "inspect"),
    )  # fmt: skip
    report = run_inspect(inspect_cfg, verbose=False)
    kinds, chance = report["slot_kinds"], report["slot_kinds_other_question"]
    return (
        f"latents (latentrl inspect, {INSPECT_QUESTIONS} questions): name the gold answer in "
        f"{kinds['answer']:.0%} of slots (another question's: {chance['answer']:.0%}), a step's "
        f"result in {kinds['intermediate']:.0%} ({chance['intermediate']:.0%}); pictures in "
        f"{seed_dir / 'inspect'}"
    )


def seed_table(accuracies: dict[int, dict[str, float]]) -> str:
    """Held-out accuracy per seed, with the mean and range over the seeds."""
    seeds = list(accuracies)
    header = f"{'held-out accuracy':<24}" + "".join(f"{f'seed {s}':>9}" for s in seeds)
    lines = ["", header + "   mean (range)"]
    for name in accuracies[seeds[0]]:
        values = [accuracies[s][name] for s in seeds]
        cells = "".join(f"{v:>9.1%}" for v in values)
        lines.append(f"{name:<24}{cells}   {mean_and_range(values)}")
    return "\n".join(lines)
