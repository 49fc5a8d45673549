"""``latentrl demo`` (``make demo``): DLR end to end on 2 CPU cores.

1. build a tiny Qwen2 main model and tokenizer for the task and pre-train it (cached);
2. freeze it and train a latent plugin for it with the DLR recipe of ``dlr_config``
   (the task, rollout engine, held-out problems and run folder come from the demo's
   config, so the plugin is trained for exactly the model built in step 1);
3. print held-out accuracy of the frozen model alone, with the warm-started plugin (when
   the recipe warm-starts) and with the RL-trained plugin, and the reward's trend; the
   plugin, ``summary.json``, ``metrics.jsonl`` and ``curves.png`` are in the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from latentrl.config import DemoConfig, DLRConfig, load_config, save_config
from latentrl.models.tiny import pretrained_tiny_model
from latentrl.trainers import dlr


def run_demo(config_path: str | None, overrides: Sequence[str]) -> int:
    cfg = load_config(DemoConfig, config_path, overrides)
    # The recipe is checked before the model is built: a bad value fails in seconds.
    recipe = load_config(DLRConfig, cfg.dlr_config, cfg.dlr_overrides)
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
    recipe.main_model = str(model_dir)
    recipe.task = cfg.task
    recipe.rollout = cfg.rollout
    recipe.eval_problems = cfg.eval_problems
    recipe.output_dir = str(run_dir)
    status = dlr.run(recipe)
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; run folder {run_dir}")
    return status
