"""DLR scaled out: ``accelerate launch --num_processes 2`` (gloo on CPU) against one
process, and decoding on a vLLM server without the main model in trainer memory.

The global batch is the same, so the logged numbers and the trained plugin must match a
single-process run up to float summation order, and a checkpoint resumes with either count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentrl.models.latent_plugin import LatentPlugin
from latentrl.trainers.common import read_metrics
from tests.conftest import REPO_ROOT
from tests.trainers.test_dlr import CONFIG, TIMING_KEYS, _run, small_run

# Four questions x G=4 a step, shared by two processes: two questions each.
STEPS = ("steps=4",)


def _launch(model_dir: Path, output_dir: Path, *overrides: str, resume: bool = False) -> None:
    """``accelerate launch --num_processes 2 latentrl train dlr ...`` in a subprocess."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "latentrl.cli", "train", "dlr", "--config", str(CONFIG),
        *small_run(model_dir, output_dir, *overrides), *(["--resume"] if resume else []),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_run(a: Path, b: Path) -> None:
    rows_a, rows_b = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if key not in TIMING_KEYS:
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["step"], key)
    plugin_a = LatentPlugin.from_pretrained(a / "plugin").state_dict()
    plugin_b = LatentPlugin.from_pretrained(b / "plugin").state_dict()
    for name, tensor in plugin_a.items():
        torch.testing.assert_close(plugin_b[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dlr_one_process")
    _run(tiny_model_dir, folder, *STEPS)
    return folder


def test_two_processes_match_one_then_resume_with_one(tiny_model_dir, single_process_run, tmp_path):
    run = tmp_path / "two_then_one"
    _launch(tiny_model_dir, run, "steps=2")
    _run(tiny_model_dir, run, *STEPS, resume=True)
    assert_same_run(single_process_run, run)
    # Every process logged through one writer: one line per step, not one per process.
    assert len(read_metrics(run / "metrics.jsonl")) == 4


def test_one_process_resumes_with_two(tiny_model_dir, single_process_run, tmp_path):
    run = tmp_path / "one_then_two"
    _run(tiny_model_dir, run, "steps=2")
    _launch(tiny_model_dir, run, *STEPS, resume=True)
    assert_same_run(single_process_run, run)


def test_a_vllm_server_backend_keeps_only_the_main_models_embeddings(
    tiny_model_dir, vllm_server_url, tmp_path
):
    from transformers import AutoModelForCausalLM

    from latentrl.config import DLRConfig, load_config
    from latentrl.trainers.dlr import DLRTrainer

    overrides = small_run(tiny_model_dir, tmp_path, "steps=1", "rollout.backend=vllm_server")
    cfg = load_config(DLRConfig, CONFIG, [*overrides, f"rollout.server_urls=[{vllm_server_url}]"])
    trainer = DLRTrainer(cfg)
    trainer.setup()
    try:
        assert trainer.main_model is None
        full = AutoModelForCausalLM.from_pretrained(tiny_model_dir).get_input_embeddings()
        assert torch.equal(trainer.main_embeddings.weight, full.weight)
        trainer.train()
        assert read_metrics(tmp_path / "metrics.jsonl")[0]["main_tokens_decoded"] > 0
    finally:
        trainer.cleanup()
