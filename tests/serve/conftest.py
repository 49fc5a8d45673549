"""One tiny plugin (a real DLR plugin after one training step) and one `latentrl serve`
subprocess per test session, serving the shared tiny model on the hf backend (it starts in
seconds; the vLLM backend decodes the same greedy text, see tests/rollout)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from latentrl.trainers import dlr
from tests.conftest import REPO_ROOT, TEST_TASK_OPTIONS, _free_port, running_server

API_KEY = "test-key"
MAX_TOKENS_LIMIT = 64
MAX_BODY_BYTES = 20_000


@pytest.fixture(scope="session")
def tiny_plugin_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A DLR plugin for the tiny model after one RL step (`latentrl train dlr`)."""
    output_dir = tmp_path_factory.mktemp("dlr")
    options = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]
    dlr.main(REPO_ROOT / "configs" / "dlr_arith_tiny.yaml", [
        f"main_model={tiny_model_dir}", f"output_dir={output_dir}", "steps=1",
        "questions_per_step=4", "group_size=4", "decode_k=4", "eval_problems=4",
        "decode_max_tokens=8", "checkpoint_every=0", "rollout.backend=hf", "warm_start_steps=0",
        *options,
    ])  # fmt: skip
    return output_dir / "plugin"


@dataclass
class Server:
    url: str
    process: subprocess.Popen


@pytest.fixture(scope="session")
def server(tiny_model_dir, tiny_plugin_dir, tmp_path_factory):
    """`latentrl serve` with the tiny model as ``main`` and the plugin as ``tiny``."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    command = [
        sys.executable, "-m", "latentrl.cli", "serve", "--model", str(tiny_model_dir),
        "--plugin", f"tiny={tiny_plugin_dir}", "--port", str(port), "--api-key", API_KEY,
        "served_model_name=main", "rollout.backend=hf", f"max_tokens_limit={MAX_TOKENS_LIMIT}",
        f"max_body_bytes={MAX_BODY_BYTES}",
    ]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    with running_server(command, url, log_path, env, "latentrl serve", timeout_s=180) as process:
        yield Server(url, process)
