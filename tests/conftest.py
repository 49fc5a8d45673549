"""Shared fixtures: one tiny pre-trained model, one vLLM engine and one vLLM server per session.

vLLM takes ~25-60 s to start on this CPU, so every test that needs it shares these.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from latentrl.config import PretrainConfig, RolloutConfig, TinyModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every seed the tests use (initialisation, data order, sampling, the pre-trained bases) is
# shifted by this, and the suite must pass for 0, 1 and 2: a test of learning that holds on
# one seed only would fail on the next machine, whose numerics differ as much as a new seed.
TEST_SEED = int(os.environ.get("LATENTRL_TEST_SEED", "0"))

# Small enough to build in well under a minute, trained enough that greedy decoding is
# confident (no near-ties between backends) and answers some problems right.
TEST_MODEL = TinyModelConfig(
    vocab_size=384, hidden_size=128, num_layers=2, num_heads=2, seed=TEST_SEED
)
TEST_PRETRAIN = PretrainConfig(
    steps=300, batch_size=32, learning_rate=3e-3, num_examples=4000, seed=TEST_SEED
)
TEST_TASK_OPTIONS = {"steps": 2, "max_value": 20}


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repo (CI clones it with shared/ beside), or the env var."""
    return Path(os.environ.get("LATENTRL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from latentrl.pretrained import pretrained_tiny_model

    return pretrained_tiny_model(
        "arith", TEST_TASK_OPTIONS, TEST_MODEL, TEST_PRETRAIN, progress=False
    )


@pytest.fixture(scope="session")
def tiny_plugin_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A DLR plugin for the tiny model after one RL step (`latentrl train dlr`)."""
    from latentrl.trainers import dlr

    output_dir = tmp_path_factory.mktemp("dlr")
    options = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]
    dlr.main(REPO_ROOT / "configs" / "dlr_arith_tiny.yaml", [
        f"main_model={tiny_model_dir}", f"output_dir={output_dir}", "loop.steps=1",
        "questions_per_step=4", "group_size=4", "decode_k=4", "eval_problems=4",
        "decode_max_tokens=8", "loop.checkpoint_every=0", "rollout.backend=hf", "warm_start_steps=0",
        *options,
    ])  # fmt: skip
    return output_dir / "plugin"


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir):
    from latentrl.rollout import make_engine

    return make_engine(tiny_model_dir, RolloutConfig(backend="hf"))


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    with in_process_vllm(tiny_model_dir) as engine:
        yield engine


@contextmanager
def in_process_vllm(model_dir: Path) -> Iterator:
    """The in-process vLLM engine on ``model_dir`` (1 GiB of KV cache), closed after."""
    pytest.importorskip("vllm")
    from latentrl.rollout import make_engine

    engine = make_engine(model_dir, RolloutConfig(backend="vllm", cpu_kvcache_space_gib=1))
    try:
        yield engine
    finally:
        engine.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server_url(tiny_model_dir, tmp_path_factory):
    """A real vLLM OpenAI server on loopback, serving the tiny model."""
    with vllm_server(tiny_model_dir, tmp_path_factory) as url:
        yield url


@contextmanager
def vllm_server(model_dir: Path, tmp_path_factory) -> Iterator[str]:
    """A real vLLM OpenAI server on loopback serving ``model_dir``; yields its URL."""
    pytest.importorskip("vllm")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--enable-prompt-embeds", "--dtype", "float32",
        "--host", "127.0.0.1", "--port", str(port), "--seed", str(TEST_SEED),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running_server(command, url, log_path, env, "vLLM server"):
        yield url


@contextmanager
def running_server(
    command: list[str], url: str, log_path: Path, env: dict, name: str, timeout_s: float = 300
) -> Iterator[subprocess.Popen]:
    """Run ``command`` (output to ``log_path``) until ``{url}/health`` answers; stop it after."""
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"{name} exited early:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{name} did not start in {timeout_s} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def reset_accelerator_state() -> None:
    """accelerate keeps one mixed precision per process and refuses another, so a bf16 run
    after a float32 one in the same pytest process fails unless its state is dropped (as
    accelerate's own test cases do)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator_state()


# The VQA models and retrieval folders that tests in several folders share (imported here
# at the end: those modules read this one's seed).
from tests.animals import animals_dir, numbered_animals_dir  # noqa: E402, F401
from tests.vqa_models import tiny_vqa_models  # noqa: E402, F401
