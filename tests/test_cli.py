"""The `latentrl` command: help, task listing, and config errors as a user sees them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from latentrl.cli import main


def test_help_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "latentrl.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("usage: latentrl [-h] [-v] COMMAND ...")
    for command in ("demo", "train", "tasks"):
        assert f"\n    {command} " in out


def test_tasks_lists_every_builtin_task_with_its_kind(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["arith", "text"],
        ["gsm8k", "text"],
        ["math500", "text"],
        ["shapes_vqa", "vqa"],
        ["image_qa", "vqa"],
        ["gsm8k_retrieval", "retrieval"],
        ["bright", "retrieval"],
    ]
    assert lines[5] == (
        "gsm8k_retrieval  retrieval  "
        "GSM8K test questions -> their own worked solution among all 8,792."
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["demo", "--config", "configs/demo.yaml", "eval_problem=3"],
            "latentrl demo: config error: unknown key 'eval_problem' (in the command line); known keys: cache_dir, dlr_config, dlr_overrides, eval_problems, model, output_dir, pretrain, rollout, seeds, task",
        ),
        (
            ["demo", "--config", "configs/demo.yaml", "seeds=[0,0]"],
            "latentrl demo: config error: seeds: expected one or more distinct seeds, got [0, 0] (in the command line)",
        ),
        (
            ["demo", "--config", "configs/demo.yaml", "eval_problems=lots"],
            "latentrl demo: config error: eval_problems: expected an integer, got 'lots' (in the command line)",
        ),
        (
            ["train", "dlr", "--config", "configs/dlr_arith_tiny.yaml", "decode_k=9"],
            "latentrl train: config error: decode_k: K = 9 exceeds group_size G = 8 (can't decode more samples than are drawn) (in the command line)",
        ),
        (
            ["demo", "--config", "configs/nope.yaml"],
            "latentrl demo: config error: config file not found: configs/nope.yaml",
        ),
    ],
)
def test_config_errors_exit_2_with_one_message(argv, message, capsys, monkeypatch):
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message
