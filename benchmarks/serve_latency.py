"""Serving latency and throughput: the main model alone vs through a latent plugin.

Starts `latentrl serve` in this process (uvicorn on loopback) on the demo's tiny main
model with one DLR plugin, and drives it with the openai client over the same task
prompts, greedy, in two settings:

- one request at a time: latency of a lone request (p50, p99);
- ``--concurrency`` requests in flight: throughput (requests/s, generated tokens/s) and
  the latency each request sees under load.

It prints both for plain main-model requests and plugin requests, and the ratio
plugin / main: the plugin's overhead (its assistant's forward pass over the question,
the projector, and decoding from ``prompt_embeds`` instead of token ids).

    python benchmarks/serve_latency.py [--requests 128] [--concurrency 32] [--backend auto]
                                       [--plugin FOLDER]  # default: a 1-step DLR plugin
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import openai
import uvicorn
from latentrl.tasks import get_task

from latentrl.config import DemoConfig, ServeConfig, load_config
from latentrl.models.tiny import pretrained_tiny_model
from latentrl.serve.app import create_app
from latentrl.trainers import dlr

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 16


def one_step_plugin(model_dir: Path, demo: DemoConfig, output_dir: Path) -> Path:
    """A DLR plugin after one RL step: the same compute per request as a trained one."""
    options = [f"task.options.{k}={v}" for k, v in demo.task.options.items()]
    dlr.main(ROOT / "configs" / "dlr_arith_tiny.yaml", [
        f"main_model={model_dir}", f"output_dir={output_dir}", "steps=1", "questions_per_step=4",
        "group_size=4", "decode_k=4", "eval_problems=4", "checkpoint_every=0",
        "rollout.backend=hf", *options,
    ])  # fmt: skip
    return output_dir / "plugin"


def start_server(cfg: ServeConfig) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host=cfg.host, port=cfg.port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    return server, thread


async def drive(url: str, model: str, prompts: list[str], concurrency: int) -> dict[str, float]:
    """Send every prompt, ``concurrency`` at a time; latency percentiles and throughput."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    slots = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> tuple[float, int]:
        async with slots:
            started = time.perf_counter()
            response = await client.completions.create(
                model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
            )
            return time.perf_counter() - started, response.usage.completion_tokens

    started = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts))
    seconds = time.perf_counter() - started
    await client.close()
    latencies = sorted(latency for latency, _ in results)
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[max(0, round(0.99 * len(latencies)) - 1)],
        "requests_per_s": len(results) / seconds,
        "tokens_per_s": sum(tokens for _, tokens in results) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backend", default="auto", help="rollout backend of the server")
    parser.add_argument("--plugin", help="plugin folder (default: train a 1-step DLR plugin)")
    args = parser.parse_args()
    demo = load_config(DemoConfig, ROOT / "configs" / "demo.yaml")
    model_dir = pretrained_tiny_model(demo.task.name, demo.task.options, demo.model, demo.pretrain)
    rows = get_task(demo.task.name).load("test", limit=args.requests, **demo.task.options)
    prompts = [row["prompt"] for row in rows]

    with TemporaryDirectory() as scratch:
        plugin = args.plugin or one_step_plugin(model_dir, demo, Path(scratch))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cfg = load_config(ServeConfig, overrides=[
            f"model={model_dir}", "served_model_name=main", f"plugins.plugin={plugin}",
            f"port={port}", f"rollout.backend={args.backend}", "rollout.cpu_kvcache_space_gib=1",
        ])  # fmt: skip
        server, thread = start_server(cfg)
        url = f"http://127.0.0.1:{port}"
        backend = server.config.app.state.server.engine.backend
        results = {}
        for model in ("main", "plugin"):
            asyncio.run(drive(url, model, prompts[:8], 8))  # warm-up
            results[model] = {
                "alone": asyncio.run(drive(url, model, prompts[:32], 1)),
                "loaded": asyncio.run(drive(url, model, prompts, args.concurrency)),
            }
        server.should_exit = True  # shuts the engine down too
        thread.join()

    print(f"\nlatentrl serve, {backend} backend, tiny demo model, greedy, {MAX_TOKENS} new tokens")
    print(f"{'':<44}{'main':>10}{'plugin':>10}{'plugin/main':>13}")
    lines = [
        ("one at a time: p50 latency (ms)", "alone", "p50_ms"),
        ("one at a time: p99 latency (ms)", "alone", "p99_ms"),
        (f"{args.concurrency} in flight: p50 latency (ms)", "loaded", "p50_ms"),
        (f"{args.concurrency} in flight: p99 latency (ms)", "loaded", "p99_ms"),
        (f"{args.concurrency} in flight: requests/s", "loaded", "requests_per_s"),
        (f"{args.concurrency} in flight: generated tokens/s", "loaded", "tokens_per_s"),
    ]
    for label, setting, key in lines:
        main_value, plugin_value = results["main"][setting][key], results["plugin"][setting][key]
        print(
            f"{label:<44}{main_value:>10.1f}{plugin_value:>10.1f}{plugin_value / main_value:>12.2f}x"
        )


if __name__ == "__main__":
    main()
