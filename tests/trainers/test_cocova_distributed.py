"""CoCoVa under ``accelerate launch --num_processes 2`` (gloo on CPU) against one process
with the same global batch: each process takes half of every batch and of the held-out
rows, and the InfoNCE negatives are gathered from both, so the logged losses, the held-out
accuracy and the trained plugin match up to float summation order, also after resuming
with one process."""

from __future__ import annotations

import json
import shutil

from latentrl.cli import main as cli_main
from latentrl.models.qformer import CoCoVaPlugin
from tests.distributed import accelerate_launch, assert_same_metrics, assert_same_weights
from tests.trainers.test_cocova import run_args

# Eight rows a step (four per process), every auxiliary loss on, evaluated at step 2.
SMALL = ("train_examples=64", "eval_problems=8", "batch_size=8", "eval_every=2")
STEPS = ("loop.steps=4", "loop.checkpoint_every=2")


def test_two_processes_match_one_then_resume_with_one(tiny_vqa_models, tmp_path):
    one, two = tmp_path / "one_process", tmp_path / "two_then_one"
    assert cli_main(run_args(tiny_vqa_models, one, *SMALL, *STEPS)) == 0
    accelerate_launch(*run_args(tiny_vqa_models, two, *SMALL, *STEPS))
    assert_same_metrics(one, two, 4, timing_keys={"elapsed_s"})
    assert_same_plugin(one, two)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (one, two)]
    assert summaries[1]["accuracy"] == summaries[0]["accuracy"]
    assert summaries[1]["question_only_accuracy"] == summaries[0]["question_only_accuracy"]

    # The last two steps again, resumed from step 2 with one process.
    shutil.rmtree(two / "checkpoint-000004")
    assert cli_main([*run_args(tiny_vqa_models, two, *SMALL, *STEPS), "--resume"]) == 0
    assert_same_metrics(one, two, 4, timing_keys={"elapsed_s"})
    assert_same_plugin(one, two)


def assert_same_plugin(a, b):
    assert_same_weights(
        CoCoVaPlugin.from_pretrained(a / "plugin").state_dict(),
        CoCoVaPlugin.from_pretrained(b / "plugin").state_dict(),
    )


def test_a_batch_that_does_not_split_over_the_processes_is_a_config_error(
    tiny_vqa_models, tmp_path
):
    done = accelerate_launch(*run_args(tiny_vqa_models, tmp_path, "batch_size=7"), check=False)
    assert done.returncode != 0
    assert "config error: batch_size: 7 rows can't be split evenly over 2 processes" in done.stderr
