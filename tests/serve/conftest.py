"""One `latentrl serve` subprocess per test session, serving the shared tiny model and the
shared tiny plugin (tests/conftest.py) on the hf backend (it starts in seconds; the vLLM
backend decodes the same greedy text, see tests/rollout)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import _free_port, running_server

API_KEY = "test-key"
MAX_TOKENS_LIMIT = 64
MAX_BODY_BYTES = 20_000


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
