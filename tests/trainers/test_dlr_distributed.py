"""DLR scaled out: ``accelerate launch --num_processes 2`` (gloo on CPU) against one
process, and decoding on a vLLM server without the main model in trainer memory.

The global batch is the same, so the logged numbers and the trained plugin must match a
single-process run up to float summation order, and a checkpoint resumes with either count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentrl.models.latent_plugin import LatentPlugin
from latentrl.trainers.metrics import read_metrics
from tests.distributed import accelerate_launch, assert_same_metrics, assert_same_weights
from tests.trainers.test_dlr import CONFIG, TIMING_KEYS, _run, small_run

# Four questions x G=4 a step, shared by two processes: two questions each; so is each
# warm-start batch (a resumed run skips the warm start).
WARM_START = ("warm_start_steps=2", "warm_start_batch_size=4")
# Without the likelihood reward: its scores change in the 7th digit with the batch split
# (padding width and batch size change the main model's matmul blocking), and on this
# untrained model the rewards are those scores alone, ~1e-3 apart, which group
# normalisation stretches past the float-summation tolerance within 4 steps. Its
# exactness is covered by the single-process resume test.
STEPS = ("loop.steps=4", "likelihood_weight=0", *WARM_START)
HALF = ("loop.steps=2", "likelihood_weight=0", *WARM_START)


def _launch(model_dir: Path, output_dir: Path, *overrides: str, resume: bool = False) -> None:
    """``accelerate launch --num_processes 2 latentrl train dlr ...`` in a subprocess."""
    accelerate_launch(
        "train", "dlr", "--config", str(CONFIG), *small_run(model_dir, output_dir, *overrides),
        *(["--resume"] if resume else []),
    )  # fmt: skip


def assert_same_run(a: Path, b: Path) -> None:
    assert_same_metrics(a, b, 4, TIMING_KEYS)
    assert_same_weights(
        LatentPlugin.from_pretrained(a / "plugin").state_dict(),
        LatentPlugin.from_pretrained(b / "plugin").state_dict(),
    )


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dlr_one_process")
    _run(tiny_model_dir, folder, *STEPS)
    return folder


def test_two_processes_match_one_then_resume_with_one(tiny_model_dir, single_process_run, tmp_path):
    run = tmp_path / "two_then_one"
    _launch(tiny_model_dir, run, *HALF)
    _run(tiny_model_dir, run, *STEPS, resume=True)
    assert_same_run(single_process_run, run)
    # Every process logged through one writer: one line per step, not one per process.
    assert len(read_metrics(run / "metrics.jsonl")) == 4


def test_one_process_resumes_with_two(tiny_model_dir, single_process_run, tmp_path):
    run = tmp_path / "one_then_two"
    _run(tiny_model_dir, run, *HALF)
    _launch(tiny_model_dir, run, *STEPS, resume=True)
    assert_same_run(single_process_run, run)


def test_a_vllm_server_backend_keeps_only_the_main_models_embeddings(
    tiny_model_dir, vllm_server_url, tmp_path
):
    from transformers import AutoModelForCausalLM

    from latentrl.config import DLRConfig, load_config
    from latentrl.trainers.dlr import DLRTrainer

    # Without the likelihood reward, which runs the main model in the trainer.
    overrides = small_run(
        tiny_model_dir,
        tmp_path,
        "loop.steps=1",
        "rollout.backend=vllm_server",
        "likelihood_weight=0",
    )
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
