"""Token-level GRPO recipe (TRL): a LoRA "reasoning adapter" on the main model.

    latentrl train grpo --config configs/grpo_arith_tiny.yaml model=PATH

The token-level baseline DLR is compared with: TRL's ``GRPOTrainer`` samples
``num_generations`` completions per prompt, scores them with latentrl's reward functions
(TRL's reward signature) and trains a PEFT LoRA adapter on the main model. The adapter is
saved to ``output_dir/adapter`` and evaluated with ``latentrl eval --adapter``.

Settings TRL would otherwise default to for GPUs are set for any machine: no bf16 on CPU,
no gradient checkpointing (tiny models), the learning rate of the config.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import ConfigError, GRPOTrainConfig, load_config, save_config
from latentrl.models.named import resolve_model
from latentrl.prompts import configured_task, use_chat_template, with_prompts
from latentrl.rewards import get_reward


def build_trainer(cfg: GRPOTrainConfig):
    """A TRL ``GRPOTrainer`` for ``cfg`` (nothing trained yet)."""
    from trl import GRPOConfig, GRPOTrainer

    if not cfg.model:
        raise ConfigError("missing required key 'model' (a model folder or Hub id)")
    task = configured_task(cfg.task)
    model_path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    chat = use_chat_template(tokenizer, cfg.chat_template)
    rows = with_prompts(task, task.load("train", **cfg.task.options), tokenizer, chat)
    dataset = rows.select_columns(["prompt", "answer"])
    reward_funcs = [
        get_reward(name, style=task.answer_format) if name == "format" else get_reward(name)
        for name in cfg.rewards
    ]
    run_dir = Path(cfg.output_dir)
    args = GRPOConfig(
        output_dir=str(run_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.questions_per_step * cfg.num_generations,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        beta=cfg.beta,
        reward_weights=list(cfg.reward_weights),
        use_vllm=cfg.use_vllm,
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=cfg.report_to or "none",
        seed=cfg.seed,
        disable_tqdm=False,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path)
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )


def train(cfg: GRPOTrainConfig):
    """Train ``cfg``'s LoRA adapter and save it to ``output_dir/adapter``; returns the trainer."""
    trainer = build_trainer(cfg)
    run_dir = Path(cfg.output_dir)
    save_config(cfg, run_dir / "config.yaml")
    trainer.train()
    trainer.model.save_pretrained(run_dir / "adapter")
    trainer.processing_class.save_pretrained(run_dir / "adapter")
    return trainer


def eval_overrides(cfg: GRPOTrainConfig) -> list[str]:
    """``latentrl eval`` overrides that ask the trained task as training did (same prompts)."""
    overrides = [f"task.name={cfg.task.name}", f"task.options={json.dumps(cfg.task.options)}"]
    if cfg.task.chat_instruction is not None:
        overrides.append(f"task.chat_instruction={json.dumps(cfg.task.chat_instruction)}")
    if cfg.chat_template is not None:
        overrides.append(f"chat_template={str(cfg.chat_template).lower()}")
    return overrides


def main(config_path: str | None, overrides: Sequence[str]) -> int:
    cfg = load_config(GRPOTrainConfig, config_path, overrides)
    train(cfg)
    adapter = Path(cfg.output_dir) / "adapter"
    command = ["latentrl", "eval", "--model", cfg.model, "--adapter", str(adapter)]
    print(f"LoRA adapter saved to {adapter}; evaluate it with "
          f"`{shlex.join(command + eval_overrides(cfg))}`")  # fmt: skip
    return 0
