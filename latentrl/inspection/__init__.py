"""``latentrl inspect``: pictures and numbers of what latents carry.

    latentrl inspect --plugin runs/demo/seed-0/plugin [--task arith] [--limit 12] [--output-dir D]

Writes ``inspect.json`` and PNG pictures into the output folder and prints a summary. The
DLR view is in :mod:`latentrl.inspection.dlr`.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import ConfigError, InspectConfig, TaskConfig
from latentrl.io import write_json
from latentrl.models.latent_plugin import LatentPlugin
from latentrl.models.named import resolve_model
from latentrl.prompts import configured_task


def run_inspect(cfg: InspectConfig, verbose: bool = True) -> dict:
    """Inspect ``cfg.plugin``, write ``inspect.json`` and the pictures; returns the report."""
    from latentrl.inspection.dlr import draw_pictures, inspect_plugin, summary_lines

    plugin = LatentPlugin.from_pretrained(cfg.plugin, main_model=cfg.model)
    main_path = resolve_model(cfg.model or plugin.config.main_model)
    tokenizer = AutoTokenizer.from_pretrained(main_path)
    main = AutoModelForCausalLM.from_pretrained(main_path).eval()
    task_cfg = cfg.task or trained_task(Path(cfg.plugin))
    task = configured_task(task_cfg)
    rows = list(task.load(cfg.split, limit=cfg.limit, **task_cfg.options))
    if not rows:
        raise ConfigError(f"task {task.name!r} {cfg.split}: no rows to inspect")
    report = inspect_plugin(plugin, main, tokenizer, rows, cfg.top_k, cfg.samples, cfg.seed)
    report |= {"plugin": cfg.plugin, "main_model": cfg.model or plugin.config.main_model,
               "task": {"name": task.name, "options": task_cfg.options}}  # fmt: skip
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plugin_dir = Path(cfg.plugin).resolve()
    pictures = draw_pictures(report, out, f"{plugin_dir.parent.name}/{plugin_dir.name}")
    write_json(out / "inspect.json", report)
    if verbose:
        print(f"{cfg.plugin}: {task.name} ({cfg.split}, {len(rows)} questions)")
        print("\n".join(summary_lines(report)))
        print(f"saved {out / 'inspect.json'}, {', '.join(str(p) for p in pictures)}")
    return report


def trained_task(plugin: Path) -> TaskConfig:
    """The task of the run a plugin was saved in (``RUN/plugin`` beside ``RUN/config.yaml``)."""
    for config in (plugin.parent / "config.yaml", plugin.parent.parent / "config.yaml"):
        if config.is_file():
            task = (yaml.safe_load(config.read_text()) or {}).get("task")
            if isinstance(task, dict) and "name" in task:
                return TaskConfig(**task)
    raise ConfigError(f"{plugin}: no run config.yaml beside it to read its task from; give --task")
