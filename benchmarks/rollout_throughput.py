"""Rollout throughput: vLLM in-process vs batched transformers, token prompts and prompt_embeds.

Decodes the same 256 prompts x 8 samples with each backend in one run (sampling at
temperature 1 until EOS or the stop string, capped by max_tokens, so completions have
realistic, variable lengths) and prints generated tokens/s and the ratios. It also runs
plain ``model.generate`` on the same batches, where finished rows keep being computed
until the longest one ends, to measure what the hf backend's row compaction saves.

    python benchmarks/rollout_throughput.py [--prompts 256] [--samples 8] [--max-tokens 64]

On this 2-core CPU the figures are reported, not promised (vLLM's CPU path is not
expected to beat transformers on a tiny model); on a GPU vLLM should win widely.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from latentrl.config import DemoConfig, RolloutConfig, load_config
from latentrl.pretrained import pretrained_tiny_model
from latentrl.rollout import SamplingParams, make_engine
from latentrl.tasks import get_task

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def timed_generate(engine, prompts, params) -> tuple[float, int]:
    started = time.perf_counter()
    outputs = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    return seconds, sum(len(c.token_ids) for out in outputs for c in out.completions)


def timed_plain_generate(engine, prompts, params) -> tuple[float, int, int]:
    """``model.generate`` on the hf engine's batches: (seconds, useful tokens, computed rows x steps)."""
    model, tokenizer = engine.model, engine.tokenizer
    rows = sorted((p for p in prompts for _ in range(params.n)), key=len)
    useful = computed = 0
    started = time.perf_counter()
    for start in range(0, len(rows), engine.batch_size):
        batch = rows[start : start + engine.batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in batch])
        mask = (
            torch.arange(width)[None] >= torch.tensor([width - len(p) for p in batch])[:, None]
        ).long()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, temperature=params.temperature,
                top_k=0, max_new_tokens=params.max_tokens, stop_strings=list(params.stop),
                tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        generated = out[:, width:]
        computed += generated.numel()
        useful += int((generated != tokenizer.pad_token_id).sum())
    return time.perf_counter() - started, useful, computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    demo = load_config(DemoConfig, DEMO_CONFIG)  # the demo's model (cached after `make demo`)
    model_dir = pretrained_tiny_model(demo.task.name, demo.task.options, demo.model, demo.pretrain)
    task = get_task(demo.task.name)
    rows = task.load("test", limit=args.prompts, **demo.task.options)
    hf = make_engine(model_dir, RolloutConfig(backend="hf", hf_batch_size=256))
    token_prompts = [hf.tokenizer(row["prompt"])["input_ids"] for row in rows]
    embed = hf.model.get_input_embeddings()
    with torch.no_grad():
        embed_prompts = [embed(torch.tensor(ids)) for ids in token_prompts]
    params = SamplingParams(
        n=args.samples, temperature=1.0, max_tokens=args.max_tokens, stop=("\n\n",)
    )
    print(f"model: {model_dir}")
    print(
        f"{args.prompts} prompts x {args.samples} samples, max_tokens {args.max_tokens}, temperature 1, stop on EOS or '\\n\\n'"
    )

    vllm = make_engine(model_dir, RolloutConfig(backend="vllm"))
    timed_generate(vllm, token_prompts[:8], params)  # warm-up (first-call compilation)
    timed_generate(hf, token_prompts[:8], params)

    results = {}
    for kind, prompts in (("tokens", token_prompts), ("prompt_embeds", embed_prompts)):
        for name, engine in (("vllm", vllm), ("hf", hf)):
            seconds, tokens = timed_generate(engine, prompts, params)
            results[kind, name] = tokens / seconds
            print(
                f"{kind:>13}  {name:<5} {tokens:>7} tokens in {seconds:6.1f} s = {tokens / seconds:8.0f} tokens/s"
            )
        print(
            f"{kind:>13}  vLLM / transformers throughput: {results[kind, 'vllm'] / results[kind, 'hf']:.2f}x"
        )

    seconds, useful, computed = timed_plain_generate(hf, token_prompts, params)
    print(
        f"plain model.generate: {useful} tokens in {seconds:.1f} s = {useful / seconds:.0f} tokens/s; "
        f"{computed - useful} of {computed} computed rows x steps ({(computed - useful) / computed:.0%}) were padding after EOS"
    )
    print(
        f"hf backend (finished rows leave the batch) / plain generate: {results['tokens', 'hf'] / (useful / seconds):.2f}x"
    )
    vllm.close()


if __name__ == "__main__":
    main()
