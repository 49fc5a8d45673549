"""``latentrl eval``: a model alone, with a latent plugin, or with a LoRA adapter, on a task.

Writes ``summary.json`` and ``samples.jsonl`` (prompt, completion, extracted answers,
gold, verdicts) to ``output_dir`` and prints a table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import EvalConfig
from latentrl.eval.math import evaluate_math
from latentrl.eval.vqa import run_vqa_eval
from latentrl.io import write_json, write_jsonl
from latentrl.models.loading import merge_adapter
from latentrl.models.named import resolve_model
from latentrl.prompts import configured_task, use_chat_template, with_prompts
from latentrl.rollout import SamplingParams, make_engine
from latentrl.tasks import get_task


def run_eval(cfg: EvalConfig) -> dict:
    if get_task(cfg.task.name, kind=None).kind == "vqa":
        return run_vqa_eval(cfg)
    task = configured_task(cfg.task)
    model_path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # A plugin reads the task's plain prompt, the one it was trained on.
    chat = use_chat_template(tokenizer, False if cfg.plugin else cfg.chat_template)
    examples = task.load("train", limit=cfg.fewshot, **cfg.task.options) if cfg.fewshot else []
    rows = with_prompts(
        task, task.load(cfg.split, limit=cfg.limit, **cfg.task.options), tokenizer, chat, examples
    )
    params = SamplingParams(
        n=cfg.n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed,
    )
    with tempfile.TemporaryDirectory(prefix="latentrl-merged-") as scratch:
        model_dir = (
            merge_adapter(model_path, cfg.adapter, Path(scratch)) if cfg.adapter else model_path
        )
        prompts = None
        if cfg.plugin:
            from latentrl.models.latent_plugin import LatentPlugin

            plugin = LatentPlugin.from_pretrained(cfg.plugin, main_model=cfg.model)
            main = AutoModelForCausalLM.from_pretrained(model_dir)
            prompts = plugin.mean_latent_prompts(main.get_input_embeddings(), tokenizer, rows)
        engine = make_engine(model_dir, cfg.rollout)
        try:
            result, samples = evaluate_math(engine, tokenizer, task, rows, params, prompts=prompts)
        finally:
            engine.close()

    summary = {
        "model": cfg.model,
        "plugin": cfg.plugin,
        "adapter": cfg.adapter,
        "chat_template": chat,
        "fewshot": cfg.fewshot,
        "backend": engine.backend,
        **result.to_dict(),
    }
    label = " + ".join(
        filter(None, [Path(cfg.model).name, cfg.plugin and "plugin", cfg.adapter and "adapter"])
    )
    prompting = f"{'chat' if chat else 'plain'} prompts, {cfg.fewshot}-shot"
    print(
        f"{task.name} ({cfg.split}, {result.num_problems} problems x {cfg.n}, {prompting}): {label}"
    )
    print(result.table())
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        write_json(out / "summary.json", summary)
        write_jsonl(out / "samples.jsonl", samples)
        print(f"saved {out / 'summary.json'} and {out / 'samples.jsonl'}")
    return summary
