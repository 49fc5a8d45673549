"""LaSER under ``accelerate launch --num_processes 2`` (gloo on CPU) against one process
with the same global batch: each process encodes half of every step's queries and
documents, and the document vectors are gathered with their gradients, so every query
scores against the whole batch's documents; the logged losses, the held-out nDCG and the
trained retriever match up to float summation order, also after resuming with one process."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from latentrl.cli import main
from latentrl.models.retriever import LaSERRetriever
from tests.distributed import accelerate_launch, assert_same_metrics, assert_same_weights
from tests.trainers.test_laser import train_args

LR = 1e-3


def test_two_processes_match_one_then_resume_with_one(tiny_model_dir, animals_dir, tmp_path):
    one, two = tmp_path / "one_process", tmp_path / "two_then_one"
    corpus = [json.loads(line)["text"] for line in (animals_dir / "corpus.jsonl").open()]
    # Shared: the rationales the first run generates are the ones both runs train on.
    cache = tmp_path / "rationales"
    # LoRA at a small rate: at 5e-3 (LoRA or full fine-tuning) the two runs' grad_norm
    # drifts 1.5e-4 to 3.5e-4 apart (relative) by steps 3-4, as Adam amplifies float noise.
    args = (
        "loop.steps=4",
        "loop.checkpoint_every=2",
        f"loop.learning_rate={LR}",
        "retriever.lora=true",
    )
    assert main(train_args(tiny_model_dir, animals_dir, one, cache, *args)) == 0
    accelerate_launch(*train_args(tiny_model_dir, animals_dir, two, cache, *args))
    assert_same_metrics(one, two, 4, timing_keys={"step_time"})
    assert_same_retriever(one, two, corpus)
    # Held-out scores before and after training, each process encoding half the corpus.
    summaries = [json.loads((run / "summary.json").read_text()) for run in (one, two)]
    for when in ("before", "after"):
        for name, value in summaries[0][when].items():
            if not name.endswith("_seconds"):
                assert summaries[1][when][name] == pytest.approx(value, abs=1e-6), (when, name)

    # The last two steps again, resumed from step 2 with one process.
    shutil.rmtree(two / "checkpoint-000004")
    assert main([*train_args(tiny_model_dir, animals_dir, two, cache, *args), "--resume"]) == 0
    assert_same_metrics(one, two, 4, timing_keys={"step_time"})
    assert_same_retriever(one, two, corpus)


def assert_same_retriever(a, b, texts):
    """The same function, and the same weights up to Adam's noise amplification: an entry
    whose gradient is nearly zero (layer 0's key projection along a direction all tokens
    share) moves by up to the learning rate a step, whatever the sign of its float noise
    (measured: 1e-3 in 1 of 377k LoRA entries, all others within 1e-4)."""
    one, two = (LaSERRetriever.from_pretrained(run / "retriever") for run in (a, b))
    assert_same_weights(one.state_dict(), two.state_dict(), atol=4 * LR)  # 4 steps
    torch.testing.assert_close(two.embed(texts, 32), one.embed(texts, 32), rtol=0, atol=1e-4)
