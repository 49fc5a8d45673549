"""Helpers of the tests that run a trainer under ``accelerate launch`` with CPU processes
(gloo) and compare it against a single-process run with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path

import pytest
import torch

from latentrl.trainers.metrics import read_metrics
from tests.conftest import REPO_ROOT


def accelerate_launch(
    *cli_args: str, num_processes: int = 2, check: bool = True
) -> subprocess.CompletedProcess:
    """``accelerate launch --num_processes N -m latentrl.cli CLI_ARGS`` in a subprocess
    (with ``check``, asserting that it succeeds)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", str(num_processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "latentrl.cli", *cli_args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 or not check, done.stderr[-3000:]
    return done


def assert_same_metrics(a: Path, b: Path, steps: int, timing_keys: Collection[str]) -> None:
    """Both runs logged ``steps`` steps with the same numbers, up to float summation order
    (time measurements aside)."""
    rows_a, rows_b = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    expected = list(range(1, steps + 1))
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == expected
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra.keys() == rb.keys(), ra["step"]
        for key, value in ra.items():
            if key not in timing_keys:
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["step"], key)


def assert_same_weights(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], atol: float = 1e-4
) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=1e-3, atol=atol, msg=name)
