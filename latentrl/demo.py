"""``latentrl demo`` (``make demo``): the quickest end-to-end run of the package.

1. build a tiny Qwen2 model and tokenizer for the task and pre-train it (cached);
2. load it into the shared rollout engine (vLLM when installed, else transformers);
3. greedily decode held-out problems and score them with the task's rewards;
4. print a table and save ``summary.json`` and ``samples.jsonl`` in the run folder.

Once the DLR trainer lands, the demo trains a latent plugin on top of this frozen model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from latentrl.config import DemoConfig, load_config, save_config
from latentrl.eval.math import evaluate_math
from latentrl.io import write_json, write_jsonl
from latentrl.models.tiny import pretrained_tiny_model
from latentrl.rollout import SamplingParams, make_engine
from latentrl.tasks import get_task


def run_demo(config_path: str | None, overrides: Sequence[str]) -> int:
    cfg = load_config(DemoConfig, config_path, overrides)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    task = get_task(cfg.task.name)

    started = time.perf_counter()
    model_dir = pretrained_tiny_model(
        cfg.task.name, cfg.task.options, cfg.model, cfg.pretrain, cache_dir=cfg.cache_dir
    )
    print(
        f"tiny model: {model_dir} ({time.perf_counter() - started:.0f} s, cached after the first run)"
    )

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = task.load("test", limit=cfg.eval_problems, **cfg.task.options)
    engine = make_engine(model_dir, cfg.rollout)
    try:
        result, samples = evaluate_math(
            engine,
            tokenizer,
            task,
            rows,
            SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens),
        )
    finally:
        engine.close()

    summary = {"backend": engine.backend, "model": str(model_dir), **result.to_dict()}
    write_json(run_dir / "summary.json", summary)
    write_jsonl(run_dir / "samples.jsonl", samples)
    print(
        f"\n{task.name}: {result.num_problems} held-out problems, greedy, {engine.backend} backend"
    )
    print(result.table())
    print(f"\nsaved {run_dir / 'summary.json'} and {run_dir / 'samples.jsonl'}")
    return 0
