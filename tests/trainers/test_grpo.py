"""Token-level GRPO through TRL: a run that raises held-out accuracy, an adapter plain PEFT loads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from latentrl.cli import main as cli_main
from latentrl.config import ConfigError, GRPOTrainConfig, PretrainConfig, RolloutConfig, load_config
from latentrl.eval.math import evaluate_math
from latentrl.rollout import SamplingParams, make_engine
from latentrl.tasks import get_task
from tests.conftest import REPO_ROOT, TEST_MODEL, TEST_SEED

CONFIG = REPO_ROOT / "configs" / "grpo_arith_tiny.yaml"


# A base that answers directly unless it happens to write the worked steps: pre-trained on
# the same problems with the steps 40% of the time, so greedy decoding answers directly
# while sampling sometimes works the steps, and working them greedily is more accurate.
# GRPO's reward alone has to find that out: the reasoning-adapter effect in miniature.
MIXED_TASK = {"steps": 2, "max_value": 9}
WORKED_RATE = 0.4
MIXED_PRETRAIN = PretrainConfig(steps=600, batch_size=32, num_examples=4000, seed=TEST_SEED)
HELD_OUT = 300  # the standard error of greedy accuracy on 300 problems is under 3 points
GRPO_RUN = ["steps=60", "questions_per_step=8", "num_generations=8", "max_completion_length=24",
            "learning_rate=1e-3", f"seed={TEST_SEED}"]  # fmt: skip


@pytest.fixture(scope="module")
def mostly_direct_model_dir(tmp_path_factory) -> Path:
    from latentrl.models.tiny import build_tiny_model, pretrain, train_tokenizer

    task = get_task("arith")
    choose = random.Random(TEST_SEED)
    examples = []
    for row in task.load("train", limit=MIXED_PRETRAIN.num_examples, **MIXED_TASK):
        direct = " " + row["solution"].split("\n")[-1]
        examples.append(
            (row["prompt"], task.target(row) if choose.random() < WORKED_RATE else direct)
        )
    tokenizer = train_tokenizer(
        (prompt + target for prompt, target in examples), TEST_MODEL.vocab_size
    )
    model = build_tiny_model(tokenizer, TEST_MODEL)
    pretrain(model, tokenizer, examples, MIXED_PRETRAIN, progress=False)
    folder = tmp_path_factory.mktemp("mostly-direct")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def greedy_eval(model_dir: Path, tokenizer) -> tuple[float, float]:
    """Greedy accuracy on held-out problems, and the share of answers that work the steps."""
    task = get_task("arith")
    rows = task.load("test", limit=HELD_OUT, **MIXED_TASK)
    engine = make_engine(model_dir, RolloutConfig(backend="hf", hf_batch_size=256))
    try:
        result, samples = evaluate_math(
            engine, tokenizer, task, rows, SamplingParams(temperature=0.0, max_tokens=24)
        )
    finally:
        engine.close()
    worked = sum("=" in sample["completion"] for sample in samples) / len(samples)
    return result.flexible_accuracy, worked


def test_grpo_raises_held_out_accuracy_with_an_adapter_plain_peft_loads(
    mostly_direct_model_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(mostly_direct_model_dir)
    before, worked_before = greedy_eval(mostly_direct_model_dir, tokenizer)
    assert worked_before < 0.1  # greedy answers directly

    options = [f"task.options.{k}={v}" for k, v in MIXED_TASK.items()]
    argv = ["train", "grpo", "--config", str(CONFIG), f"model={mostly_direct_model_dir}",
            f"output_dir={tmp_path / 'run'}", *GRPO_RUN, *options]  # fmt: skip
    assert cli_main(argv) == 0

    base = AutoModelForCausalLM.from_pretrained(mostly_direct_model_dir)
    adapted = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
    adapted.merge_and_unload().save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    after, worked_after = greedy_eval(tmp_path / "merged", tokenizer)
    # Measured (docs/results.md, seeds 0-2): greedy answers work the steps 0% -> 100% of the time.
    print(f"seed {TEST_SEED}: held-out {before:.1%} -> {after:.1%}, worked steps "
          f"{worked_before:.0%} -> {worked_after:.0%}")  # fmt: skip
    assert worked_after > 0.5
    assert after >= before + 0.08, f"held-out accuracy {before:.1%} -> {after:.1%}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_generations=1", "num_generations: GRPO needs at least 2 completions per prompt"),
        ("reward_weights=[1.0,0.5]", "reward_weights: 2 weights for 1 rewards"),
        ("beta=-1", "beta: must be >= 0, got -1.0"),
    ],
)
def test_bad_grpo_config(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(GRPOTrainConfig, CONFIG, [override])


def test_missing_model_is_named(tmp_path):
    from latentrl.trainers.grpo import build_trainer

    with pytest.raises(ConfigError, match="missing required key 'model'"):
        build_trainer(load_config(GRPOTrainConfig, CONFIG, [f"output_dir={tmp_path}"]))
