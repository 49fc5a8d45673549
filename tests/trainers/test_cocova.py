"""`latentrl train cocova` and `latentrl eval --task shapes_vqa`, end to end on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from latentrl.cli import main as cli_main
from latentrl.config import CoCoVaConfig, ConfigError, load_config
from latentrl.models.qformer import CoCoVaPlugin
from latentrl.trainers.cocova import CoCoVaTrainer
from latentrl.trainers.metrics import read_metrics
from tests.conftest import REPO_ROOT, TEST_SEED

CONFIG = REPO_ROOT / "configs" / "cocova_shapes_tiny.yaml"


def run_args(models, output_dir, *overrides):
    return [
        "train", "cocova", "--config", str(CONFIG),
        f"language_model={models['language_model']}", f"vision_encoder={models['vision_encoder']}",
        f"output_dir={output_dir}", "train_examples=256", "eval_problems=24", "batch_size=16",
        "plugin.width=32", "plugin.num_heads=2", "plugin.denoiser_width=32", "time_budget_s=0",
        "loop.checkpoint_every=3", "loop.warmup_steps=1", f"seed={TEST_SEED}", *overrides,
    ]  # fmt: skip


def test_training_lowers_the_answer_loss_and_eval_reproduces_the_summary(
    tiny_vqa_models, tmp_path, capsys
):
    out = tmp_path / "run"
    assert (
        cli_main(run_args(tiny_vqa_models, out, "loop.steps=100", "loop.learning_rate=3e-3")) == 0
    )
    metrics = read_metrics(out / "metrics.jsonl")
    assert len(metrics) == 100
    first = sum(m["answer_loss"] for m in metrics[:10]) / 10
    last = sum(m["answer_loss"] for m in metrics[-10:]) / 10
    # Measured 0.510 -> 0.466 with the test models (the answer prior alone is already ~0.5).
    assert last < first - 0.03, (first, last)
    # The gate starts closed, and the first step's learning rate is 0 (transformers'
    # warm-up starts from 0): it opens as training goes on.
    assert metrics[0]["gate"] == 0 and metrics[-1]["gate"] != 0
    assert {
        "infonce_loss",
        "diffusion_loss",
        "infonce_image",
        "temperature",
        "update_ratio_3",
    } <= set(metrics[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_iterations"] == 3.0
    assert {"accuracy_level_1", "majority_accuracy_level_3", "question_only_accuracy"} <= set(
        summary
    )
    assert len((out / "samples.jsonl").read_text().splitlines()) == 24
    assert (out / "curves.png").is_file()

    capsys.readouterr()
    # The recipe adapts the language model with LoRA: the run saved it merged, beside the plugin.
    language_model = CoCoVaPlugin.from_pretrained(out / "plugin").config.language_model
    assert language_model == str(out / "language_model")
    code = cli_main([
        "eval", "--task", "shapes_vqa", "--model", language_model,
        "--plugin", str(out / "plugin"), "--limit", "24", "--output-dir", str(tmp_path / "eval"),
        "rollout.backend=hf", "max_tokens=4",
    ])  # fmt: skip
    assert code == 0
    evaluated = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert evaluated["accuracy"] == summary["accuracy"]
    assert evaluated["mean_iterations"] == 3.0
    assert "level 2" in capsys.readouterr().out


def test_resume_continues_the_run_exactly(tiny_vqa_models, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli_main(run_args(tiny_vqa_models, straight, "loop.steps=5")) == 0
    assert cli_main(run_args(tiny_vqa_models, resumed, "loop.steps=3")) == 0
    assert cli_main([*run_args(tiny_vqa_models, resumed, "loop.steps=5"), "--resume"]) == 0

    def losses(run):
        return [
            (m["step"], m["answer_loss"], m["diffusion_loss"])
            for m in read_metrics(run / "metrics.jsonl")
        ]

    assert losses(resumed) == losses(straight)
    a = CoCoVaPlugin.from_pretrained(straight / "plugin").state_dict()
    b = CoCoVaPlugin.from_pretrained(resumed / "plugin").state_dict()
    assert all((a[k] == b[k]).all() for k in a)


def test_llava_baseline_and_lora_language_model_train(tiny_vqa_models, tmp_path):
    out = tmp_path / "llava"
    args = run_args(
        tiny_vqa_models, out, "loop.steps=3", "plugin.architecture=llava", "lm_mode=lora"
    )
    assert cli_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["architecture"] == "llava" and summary["mean_iterations"] == 0.0
    plugin = CoCoVaPlugin.from_pretrained(out / "plugin")
    assert plugin.config.language_model == str(out / "language_model")  # LoRA merged in
    assert not hasattr(plugin, "lqformer")


@pytest.mark.parametrize("architecture", ["lqformer", "llava"])
def test_bf16_mixed_precision_trains(tiny_vqa_models, tmp_path, architecture):
    # Under autocast the plugin's slot vectors come out in bfloat16 next to the language
    # model's float32 token embeddings (run on the CPU here: no GPU to test on).
    out = tmp_path / "bf16"
    args = run_args(
        tiny_vqa_models, out, "loop.steps=2", "loop.mixed_precision=bf16", "train_examples=64",
        "eval_problems=8", f"plugin.architecture={architecture}",
    )  # fmt: skip
    assert cli_main(args) == 0
    losses = [v for m in read_metrics(out / "metrics.jsonl") for k, v in m.items() if "loss" in k]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses)
    weights = CoCoVaPlugin.from_pretrained(out / "plugin").state_dict().values()
    assert all(w.dtype == torch.float32 for w in weights)  # the master weights stay float32


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("plugin.keep_fraction=0", "plugin.keep_fraction: must be in (0, 1]"),
        ("infonce_weight=-1", "infonce_weight: must be >= 0, got -1.0"),
        ("plugin.architecture=blip", "plugin.architecture: expected one of 'lqformer', 'llava'"),
    ],
)
def test_bad_config_values_are_named(override, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_config(CoCoVaConfig, CONFIG, [override])


def test_missing_models_are_a_config_error(tmp_path, capsys):
    code = cli_main(["train", "cocova", f"output_dir={tmp_path}", "language_model=null"])
    assert code == 2
    assert "missing required key 'language_model'" in capsys.readouterr().err


def trained(models, output_dir, *overrides):
    """The plugin's weights and the metrics of a run without its evaluations."""
    cfg = load_config(CoCoVaConfig, CONFIG, run_args(models, output_dir, *overrides)[4:])
    trainer = CoCoVaTrainer(cfg)
    trainer.setup()
    trainer.train()
    trainer.cleanup()
    return trainer.plugin.state_dict(), read_metrics(output_dir / "metrics.jsonl")


def test_gradient_accumulation_matches_one_batch(tiny_vqa_models, tmp_path):
    """Two micro-batches accumulated by accelerate train as one batch of both (InfoNCE off:
    its in-batch negatives would differ); the answer loss stays the mean over all the step's
    answer tokens."""
    settings = ("loop.steps=2", "infonce_weight=0", "train_examples=64", "eval_problems=8")
    whole, whole_metrics = trained(tiny_vqa_models, tmp_path / "whole", *settings)
    accumulated, accumulated_metrics = trained(
        tiny_vqa_models, tmp_path / "accumulated", *settings, "loop.gradient_accumulation_steps=2"
    )
    # Adam divides by the gradient's root mean square, so a weight whose gradient is zero up
    # to rounding (the self-attention key bias: softmax ignores a shift of all scores) moves
    # by an amount set by the rounding: measured 1.2e-6 on it after two steps (the query and
    # value biases: 4e-9).
    for name, tensor in whole.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-4, atol=2e-5, msg=name)
    for a, b in zip(whole_metrics, accumulated_metrics, strict=True):
        for key in ("answer_loss", "answer_accuracy", "diffusion_loss", "grad_norm", "gate"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)


def test_gradient_accumulation_must_divide_the_batch(tiny_vqa_models, tmp_path):
    overrides = run_args(tiny_vqa_models, tmp_path, "loop.gradient_accumulation_steps=3")[4:]
    message = "batch_size: 16 rows can't be split evenly over 1 processes x 3 micro-batches"
    with pytest.raises(ConfigError, match=message):
        CoCoVaTrainer(load_config(CoCoVaConfig, CONFIG, overrides)).setup()
