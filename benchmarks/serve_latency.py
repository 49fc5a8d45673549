"""Serving latency and throughput: plain main-model requests vs plugin requests, on vLLM's
async engine vs the micro-batcher over the synchronous engine.

Starts `latentrl serve` twice as a subprocess on the demo's tiny main model with one DLR
plugin, on the vLLM backend: once on vLLM's async engine (the default) and once with
``async_engine=false`` (the micro-batcher every backend had before). Each server is
driven over HTTP with streamed, greedy completions of the task's prompts, every request
generating exactly ``--max-tokens`` tokens (``ignore_eos``, so plain and plugin requests
do the same decoding work), at 1, 8, 32 and 128 requests in flight. Per setting it prints
time to first token, inter-token latency (time per generated token after the first),
p50 and p99 latency, throughput and failed requests (counted and printed, not fatal),
then the ratios plugin / plain and async / batcher, all measured in the same run.

Each number is the median of ``--repeats`` rounds, plain and plugin rounds alternating.

    python benchmarks/serve_latency.py [--max-tokens 32] [--in-flight 1 8 32 128]
        [--repeats 3] [--modes batcher async] [--plugin FOLDER]  # default: a 1-step DLR plugin
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import requests

from latentrl.config import DemoConfig, load_config
from latentrl.pretrained import pretrained_tiny_model
from latentrl.tasks import get_task
from latentrl.trainers import dlr

ROOT = Path(__file__).resolve().parents[1]
MODES = {"batcher": ["async_engine=false"], "async": []}
"""Serving modes: extra ``latentrl serve`` overrides."""


def one_step_plugin(model_dir: Path, demo: DemoConfig, output_dir: Path) -> Path:
    """A DLR plugin after one RL step: the same compute per request as a trained one."""
    options = [f"task.options.{k}={v}" for k, v in demo.task.options.items()]
    dlr.main(ROOT / "configs" / "dlr_arith_tiny.yaml", [
        f"main_model={model_dir}", f"output_dir={output_dir}", "loop.steps=1", "questions_per_step=4",
        "group_size=4", "decode_k=4", "eval_problems=4", "loop.checkpoint_every=0",
        "warm_start_steps=0", "rollout.backend=hf", *options,
    ])  # fmt: skip
    return output_dir / "plugin"


def start_server(model_dir: Path, plugin: Path, overrides: list[str], log: Path):
    """`latentrl serve` on a free port; returns the process and its URL once it answers."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "latentrl.cli", "serve", "--model", str(model_dir),
        "--plugin", f"plugin={plugin}", "--port", str(port), "served_model_name=main",
        "rollout.backend=vllm", "rollout.cpu_kvcache_space_gib=1", *overrides,
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"latentrl serve exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)


async def drive(
    url: str, model: str, prompts: list[str], in_flight: int, max_tokens: int
) -> dict[str, float]:
    """Stream every prompt, ``in_flight`` at a time; latencies, throughput, failures."""
    slots = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(prompt: str) -> tuple[float, float, int] | None:
            """Latency, time to the first streamed chunk, tokens; None if it failed."""
            body = {
                "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
            }  # fmt: skip
            async with slots:
                started = time.perf_counter()
                first, tokens = None, 0
                try:
                    async with client.stream("POST", "/v1/completions", json=body) as response:
                        response.raise_for_status()
                        async for line in response.aiter_lines():
                            if not line.startswith("data: {"):
                                continue
                            first = first or time.perf_counter() - started
                            if usage := json.loads(line[len("data: ") :]).get("usage"):
                                tokens = usage["completion_tokens"]
                except httpx.HTTPError as err:
                    print(f"    request failed: {err!r}", flush=True)
                    return None
                return time.perf_counter() - started, first, tokens

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(p) for p in prompts))
        seconds = time.perf_counter() - started
    results = [outcome for outcome in outcomes if outcome is not None]
    latencies = sorted(total for total, _, _ in results)
    return {
        "ttft_ms": 1000 * statistics.median(first for _, first, _ in results),
        # Time per output token after the first, as vLLM's benchmarks define it.
        "itl_ms": 1000 * statistics.mean((total - first) / (n - 1) for total, first, n in results),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[max(0, round(0.99 * len(latencies)) - 1)],
        "requests_per_s": len(results) / seconds,
        "tokens_per_s": sum(tokens for _, _, tokens in results) / seconds,
        "failed": len(outcomes) - len(results),
    }


def measure(url: str, prompts: list[str], levels: list[int], max_tokens: int, repeats: int) -> dict:
    """Per in-flight level and model, the median over ``repeats`` rounds (plain and plugin
    alternating, so both see the same drift of a noisy machine) of each of :func:`drive`'s
    numbers; failed requests are summed."""
    # Each round takes the next prompts, so that vLLM's prefix cache, which plain prompts
    # can hit and prompt_embeds cannot, does not replay earlier rounds' prefills.
    fresh = itertools.cycle(prompts)
    for model in ("main", "plugin"):
        asyncio.run(drive(url, model, list(itertools.islice(fresh, 16)), 8, max_tokens))  # warm-up
    results = {}
    for in_flight in levels:
        count = max(32, 2 * in_flight)
        rounds: dict[str, list[dict]] = {"main": [], "plugin": []}
        for _ in range(repeats):
            for model in rounds:
                batch = list(itertools.islice(fresh, count))
                rounds[model].append(asyncio.run(drive(url, model, batch, in_flight, max_tokens)))
        for model, measured in rounds.items():
            results[in_flight, model] = {
                key: (sum if key == "failed" else statistics.median)(m[key] for m in measured)
                for key in measured[0]
            }
            print(f"  {in_flight:>3} in flight, {model}: {results[in_flight, model]}", flush=True)
    return results


METRICS = [
    ("time to first token p50 (ms)", "ttft_ms"),
    ("inter-token latency (ms)", "itl_ms"),
    ("latency p50 (ms)", "p50_ms"),
    ("latency p99 (ms)", "p99_ms"),
    ("requests/s", "requests_per_s"),
    ("generated tokens/s", "tokens_per_s"),
    ("failed requests", "failed"),
]


def print_tables(results: dict, levels: list[int], max_tokens: int) -> None:
    print(
        f"\nlatentrl serve, vLLM backend, tiny demo model, greedy, {max_tokens} tokens per "
        f"request, {os.cpu_count()} CPU cores"
    )
    header = f"{'':<32}{'in flight':>10}" + "".join(
        f"{name:>11}" for name in ("plain", "plugin", "plug/plain")
    )
    for mode in results:
        print(f"\n{mode}\n{header}")
        for label, key in METRICS:
            for in_flight in levels:
                plain = results[mode][in_flight, "main"][key]
                plugin = results[mode][in_flight, "plugin"][key]
                ratio = f"{plugin / plain:>10.2f}x" if plain else f"{'-':>11}"
                print(f"{label:<32}{in_flight:>10}{plain:>11.1f}{plugin:>11.1f}{ratio}")
    if set(results) != set(MODES):
        return
    print(f"\nasync / batcher\n{'':<32}{'in flight':>10}{'plain':>11}{'plugin':>11}")
    for label, key in METRICS:
        for in_flight in levels:
            cells = []
            for model in ("main", "plugin"):
                batcher = results["batcher"][in_flight, model][key]
                cells.append(
                    f"{results['async'][in_flight, model][key] / batcher:>10.2f}x"
                    if batcher else f"{'-':>11}"
                )  # fmt: skip
            print(f"{label:<32}{in_flight:>10}{''.join(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--plugin", help="plugin folder (default: train a 1-step DLR plugin)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setting (median)")
    args = parser.parse_args()
    demo = load_config(DemoConfig, ROOT / "configs" / "demo.yaml")
    model_dir = pretrained_tiny_model(demo.task.name, demo.task.options, demo.model, demo.pretrain)
    rows = get_task(demo.task.name).load("test", **demo.task.options)
    prompts = [row["prompt"] for row in rows]

    results = {}
    with TemporaryDirectory() as scratch:
        plugin = (
            Path(args.plugin) if args.plugin else one_step_plugin(model_dir, demo, Path(scratch))
        )
        for mode in args.modes:
            overrides = MODES[mode]
            print(f"{mode}: starting latentrl serve", flush=True)
            process, url = start_server(model_dir, plugin, overrides, Path(scratch) / f"{mode}.log")
            try:
                results[mode] = measure(url, prompts, args.in_flight, args.max_tokens, args.repeats)
            finally:
                process.terminate()
                process.wait(timeout=60)
    print_tables(results, args.in_flight, args.max_tokens)


if __name__ == "__main__":
    main()
