"""``latentrl eval`` on a VQA task: a CoCoVa plugin's answers decoded through the shared
rollout engine, scored by exact match overall and per level next to the majority-answer
baseline (see :mod:`latentrl.data.vqa`).

``latentrl eval --task shapes_vqa --model LM --plugin runs/cocova/plugin`` runs it.
"""

from __future__ import annotations

from pathlib import Path

from latentrl.data.vqa import (
    encode_rows,
    evaluate_vqa,
    format_table,
    majority_answers,
    majority_table,
)


def run_vqa_eval(cfg) -> dict:
    """``latentrl eval`` for a VQA task: ``cfg`` is an :class:`~latentrl.config.EvalConfig`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentrl.io import write_json, write_jsonl
    from latentrl.models.named import resolve_model
    from latentrl.models.qformer import CoCoVaPlugin
    from latentrl.models.vision import VisionEncoder
    from latentrl.rollout import make_engine
    from latentrl.tasks import get_task

    if not cfg.plugin:
        raise ValueError("eval on a VQA task needs --plugin (a CoCoVa plugin folder)")
    plugin = CoCoVaPlugin.from_pretrained(cfg.plugin)
    task = get_task(cfg.task.name, kind="vqa")
    options = dict(cfg.task.options)
    rows = task.load(cfg.split, limit=cfg.limit, **options)
    majority = majority_answers(task.load("train", limit=2000, **options))
    model_dir = resolve_model(cfg.model)
    if cfg.adapter:
        import tempfile

        from latentrl.models.loading import merge_adapter

        model_dir = merge_adapter(
            cfg.model, cfg.adapter, Path(tempfile.mkdtemp(prefix="latentrl-merged-"))
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    embed = lm.get_input_embeddings()
    vision = VisionEncoder.from_pretrained(plugin.config.vision_encoder)
    visual_tokens, _ = vision.encode_all([row["image"] for row in rows])
    slot = (
        plugin.config.settings.num_queries
        if plugin.config.settings.architecture == "lqformer"
        else visual_tokens.shape[1]
    )
    encoded = encode_rows(
        tokenizer, rows, plugin.config.answer_cue, slot, lm.config.max_position_embeddings
    )
    engine = make_engine(model_dir, cfg.rollout)
    try:
        result, samples = evaluate_vqa(
            engine, tokenizer, embed, plugin, rows, encoded, visual_tokens, cfg.max_tokens
        )
    finally:
        engine.close()
    baseline = majority_table(rows, majority)
    summary = {
        "model": cfg.model,
        "plugin": cfg.plugin,
        "task": task.name,
        "num_problems": len(rows),
        **result,
        **baseline,
    }
    print(
        f"{task.name} ({cfg.split}, {len(rows)} problems): {Path(cfg.model).name} + CoCoVa plugin"
    )
    print(format_table(result, baseline))
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        write_json(out / "summary.json", summary)
        write_jsonl(out / "samples.jsonl", samples)
    return summary
