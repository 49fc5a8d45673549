"""`latentrl serve` subprocesses, one of each kind per test session, serving the shared tiny
model as ``main`` and the shared tiny plugin as ``tiny`` (tests/conftest.py):

- ``server``: the hf backend's micro-batcher, with an API key and small limits (it starts
  in seconds; the vLLM backends decode the same greedy text, see tests/rollout);
- ``async_server``: vLLM's async engine (continuous batching, token streaming).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from latentrl.config import EvalConfig, load_config
from latentrl.eval.run import run_eval
from tests.conftest import TEST_SEED, TEST_TASK_OPTIONS, _free_port, running_server

API_KEY = "test-key"
MAX_TOKENS_LIMIT = 64
MAX_BODY_BYTES = 20_000
MAX_TOKENS = 16
EVAL_PROBLEMS = 6


@dataclass
class Server:
    url: str
    process: subprocess.Popen


@pytest.fixture(scope="session")
def server(tiny_model_dir, tiny_plugin_dir, tmp_path_factory):
    """`latentrl serve` on the hf backend."""
    with latentrl_server(tiny_model_dir, tiny_plugin_dir, tmp_path_factory, [
        "--api-key", API_KEY, "rollout.backend=hf", f"max_tokens_limit={MAX_TOKENS_LIMIT}",
        f"max_body_bytes={MAX_BODY_BYTES}",
    ]) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="session")
def async_server(tiny_model_dir, tiny_plugin_dir, tmp_path_factory):
    """`latentrl serve` on vLLM's async engine."""
    pytest.importorskip("vllm")
    with latentrl_server(tiny_model_dir, tiny_plugin_dir, tmp_path_factory, [
        "rollout.backend=vllm", "rollout.cpu_kvcache_space_gib=1", f"rollout.seed={TEST_SEED}",
    ]) as running:  # fmt: skip
        yield running


@contextmanager
def latentrl_server(
    model_dir: Path, plugin_dir: Path, tmp_path_factory, options: list[str]
) -> Iterator[Server]:
    """`latentrl serve` with ``model_dir`` as ``main`` and ``plugin_dir`` as ``tiny``."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    command = [
        sys.executable, "-m", "latentrl.cli", "serve", "--model", str(model_dir),
        "--plugin", f"tiny={plugin_dir}", "--port", str(port), *options, "served_model_name=main",
    ]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    with running_server(command, url, log_path, env, "latentrl serve", timeout_s=300) as process:
        yield Server(url, process)


def eval_samples(model_dir: Path, output_dir: Path, plugin: Path | None = None) -> list[dict]:
    """``latentrl eval``'s greedy completions of the first test problems."""
    options = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]
    cfg = load_config(EvalConfig, overrides=[
        f"model={model_dir}", "task.name=arith", *options, f"limit={EVAL_PROBLEMS}",
        f"max_tokens={MAX_TOKENS}", "temperature=0", "rollout.backend=hf",
        f"output_dir={output_dir}", *([f"plugin={plugin}"] if plugin else []),
    ])  # fmt: skip
    run_eval(cfg)
    lines = (output_dir / "samples.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_answers_equal(client, model: str, samples: list[dict]) -> None:
    """Completions (one prompt per request, and all in one request) and chat answers equal
    ``latentrl eval``'s ``samples``."""
    expected = [s["completion"] for s in samples]
    assert len(set(expected)) > 1  # different problems, different answers
    one_by_one = [
        client.completions.create(
            model=model, prompt=s["prompt"], max_tokens=MAX_TOKENS, temperature=0
        ).choices[0]
        for s in samples
    ]
    assert [c.text for c in one_by_one] == expected
    assert [c.finish_reason for c in one_by_one] == [s["finish_reason"] for s in samples]
    together = client.completions.create(
        model=model, prompt=[s["prompt"] for s in samples], max_tokens=MAX_TOKENS, temperature=0
    )
    assert [c.text for c in together.choices] == expected
    assert [c.index for c in together.choices] == list(range(len(samples)))
    # No chat template: the question goes through the task's prompt template.
    questions = [s["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:") for s in samples]
    chat = [
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": q}],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        .choices[0]
        .message  # fmt: skip
        for q in questions
    ]
    assert [m.content for m in chat] == expected
    assert all(m.role == "assistant" for m in chat)
