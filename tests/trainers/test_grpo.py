"""Token-level GRPO through TRL: a few real steps, an adapter that plain PEFT loads."""

from __future__ import annotations

import pytest
import torch

from latentrl.cli import main as cli_main
from latentrl.config import ConfigError, GRPOTrainConfig, load_config
from tests.conftest import REPO_ROOT, TEST_TASK_OPTIONS

CONFIG = REPO_ROOT / "configs" / "grpo_arith_tiny.yaml"


def test_grpo_trains_a_lora_adapter_that_peft_loads(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    options = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]
    argv = ["train", "grpo", "--config", str(CONFIG), f"model={tiny_model_dir}", f"output_dir={tmp_path}",
            "steps=3", "questions_per_step=4", "num_generations=4", "max_completion_length=24", *options]  # fmt: skip
    assert cli_main(argv) == 0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, tmp_path / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained away from LoRA's zero init
    ids = torch.tensor([[1, 2, 3]])
    assert model(ids).logits.shape[-1] == base.config.vocab_size


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
