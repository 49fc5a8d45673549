"""``latentrl inspect``: pictures and numbers of what latents carry.

    latentrl inspect --plugin runs/demo/seed-0/plugin [--task arith] [--limit 12] [--output-dir D]
    latentrl inspect --plugin runs/cocova/plugin --limit 4        # a CoCoVa plugin
    latentrl inspect --retriever runs/laser/retriever [--task gsm8k_retrieval] [--limit 12]

Writes ``inspect.json`` and PNG pictures into the output folder and prints a summary. The
views: :mod:`latentrl.inspection.dlr` (DLR plugins), :mod:`latentrl.inspection.cocova`
(CoCoVa plugins) and :mod:`latentrl.inspection.laser` (retrievers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from latentrl.config import ConfigError, InspectConfig, TaskConfig
from latentrl.io import write_json
from latentrl.models.named import resolve_model
from latentrl.models.qformer import PLUGIN_CONFIG_NAME as COCOVA_CONFIG


def run_inspect(cfg: InspectConfig, verbose: bool = True) -> dict:
    """Inspect ``cfg``'s plugin or retriever, write ``inspect.json`` and the pictures;
    returns the report."""
    folder = Path(cfg.plugin or cfg.retriever)
    task = cfg.task or trained_task(folder)
    if cfg.retriever:
        inspect = inspect_retriever
    elif (folder / COCOVA_CONFIG).is_file():
        inspect = inspect_cocova
    else:
        inspect = inspect_plugin
    report, summary_lines, draw_pictures = inspect(cfg, task)
    report |= {"inspected": str(folder), "task": {"name": task.name, "options": task.options}}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = folder.resolve()
    pictures = draw_pictures(report, out, f"{resolved.parent.name}/{resolved.name}")
    write_json(out / "inspect.json", report)
    if verbose:
        print(f"{folder}: {task.name} ({cfg.split})")
        print("\n".join(summary_lines(report)))
        print(f"saved {out / 'inspect.json'}, {', '.join(str(p) for p in pictures)}")
    return report


View = tuple[dict[str, Any], Callable[[Mapping], list[str]], Callable[..., list[Path]]]


def inspect_plugin(cfg: InspectConfig, task_cfg: TaskConfig) -> View:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentrl.inspection import dlr
    from latentrl.models.latent_plugin import LatentPlugin
    from latentrl.prompts import configured_task

    plugin = LatentPlugin.from_pretrained(cfg.plugin, main_model=cfg.model)
    main_path = resolve_model(cfg.model or plugin.config.main_model)
    tokenizer = AutoTokenizer.from_pretrained(main_path)
    main = AutoModelForCausalLM.from_pretrained(main_path).eval()
    task = configured_task(task_cfg)
    rows = list(task.load(cfg.split, limit=cfg.limit, **task_cfg.options))
    if not rows:
        raise ConfigError(f"task {task.name!r} {cfg.split}: no rows to inspect")
    report = dlr.inspect_plugin(plugin, main, tokenizer, rows, cfg.top_k, cfg.samples, cfg.seed)
    report["main_model"] = cfg.model or plugin.config.main_model
    return report, dlr.summary_lines, dlr.draw_pictures


def inspect_cocova(cfg: InspectConfig, task_cfg: TaskConfig) -> View:
    from functools import partial

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentrl.config import RolloutConfig
    from latentrl.inspection import cocova
    from latentrl.models.qformer import CoCoVaPlugin
    from latentrl.models.vision import VisionEncoder
    from latentrl.rollout import make_engine
    from latentrl.tasks import get_task

    plugin = CoCoVaPlugin.from_pretrained(cfg.plugin)
    lm_path = resolve_model(cfg.model or plugin.config.language_model)
    tokenizer = AutoTokenizer.from_pretrained(lm_path)
    lm = AutoModelForCausalLM.from_pretrained(lm_path).eval()
    rows = list(
        get_task(task_cfg.name, kind="vqa").load(cfg.split, limit=cfg.limit, **task_cfg.options)
    )
    visual, _ = VisionEncoder.from_pretrained(plugin.config.vision_encoder).encode_all(
        [row["image"] for row in rows]
    )
    engine = make_engine(lm_path, RolloutConfig(backend="hf"))
    try:
        report = cocova.inspect_cocova(
            plugin, engine, tokenizer, lm.get_input_embeddings(), rows, visual,
            lm.config.max_position_embeddings,
        )  # fmt: skip
    finally:
        engine.close()
    pictures = partial(cocova.draw_pictures, pictures=[row["image"] for row in rows])
    return report, cocova.summary_lines, pictures


def inspect_retriever(cfg: InspectConfig, task_cfg: TaskConfig) -> View:
    from latentrl.inspection import laser
    from latentrl.models.retriever import LaSERRetriever
    from latentrl.tasks import get_task

    retriever = LaSERRetriever.from_pretrained(cfg.retriever)
    data = (
        get_task(task_cfg.name, kind="retrieval")
        .load(cfg.split, **task_cfg.options)
        .limit(cfg.limit)
    )
    ids = list(data.queries)
    report = laser.inspect_retriever(
        retriever, [data.queries[q] for q in ids], [data.rationales.get(q) for q in ids],
        cfg.top_k,
    )  # fmt: skip
    return report, laser.summary_lines, laser.draw_pictures


def trained_task(folder: Path) -> TaskConfig:
    """The task of the run a plugin or retriever was saved in (``RUN/config.yaml``)."""
    for config in (folder.parent / "config.yaml", folder.parent.parent / "config.yaml"):
        if config.is_file():
            task = (yaml.safe_load(config.read_text()) or {}).get("task")
            if isinstance(task, dict) and "name" in task:
                return TaskConfig(**task)
    raise ConfigError(f"{folder}: no run config.yaml beside it to read its task from; give --task")
