"""Tiny models: a tokenizer that loads back unchanged, deterministic builds, a competent model."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import PretrainConfig, TinyModelConfig
from latentrl.models.tiny import build_tiny_model, pretraining_examples, train_tokenizer
from latentrl.models.tokens import (
    LATENT_END_TOKEN,
    LATENT_START_TOKEN,
    LATENT_TOKEN,
    SPECIAL_TOKENS,
)
from latentrl.pretrained import pretrained_tiny_model
from latentrl.tasks import get_task

TEXTS = [
    f"Question: Ann has {i} pens. She buys {i % 9} more.\nAnswer: {i} + {i % 9} = {i + i % 9}\n#### {i + i % 9}"
    for i in range(300)
]


def test_tokenizer_loads_back_unchanged(tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_model(tokenizer, TinyModelConfig())
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = f"Question:  two  spaces\n\nand lines 1,234 {LATENT_START_TOKEN}{LATENT_TOKEN}{LATENT_TOKEN}{LATENT_END_TOKEN} ok ünï"
    ids = tokenizer(text)["input_ids"]
    assert loaded(text)["input_ids"] == ids
    assert loaded.decode(ids) == text  # byte-level: spaces, newlines and accents round-trip
    for token in SPECIAL_TOKENS:
        assert loaded.convert_tokens_to_ids(token) == tokenizer.convert_tokens_to_ids(token)
        assert len(loaded(token, add_special_tokens=False)["input_ids"]) == 1
    assert loaded.decode(ids, skip_special_tokens=True) == text.replace(
        f"{LATENT_START_TOKEN}{LATENT_TOKEN}{LATENT_TOKEN}{LATENT_END_TOKEN}", ""
    )


def test_tiny_model_is_deterministic_and_loads_with_automodel(tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    first = build_tiny_model(tokenizer, TinyModelConfig(seed=3))
    second = build_tiny_model(tokenizer, TinyModelConfig(seed=3))
    other = build_tiny_model(tokenizer, TinyModelConfig(seed=4))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert any(
        not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters(), strict=True)
    )
    first.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    assert torch.equal(loaded(ids).logits, first(ids).logits)


def test_pretrained_model_is_cached_and_competent(tiny_model_dir, hf_engine):
    from tests.conftest import TEST_MODEL, TEST_PRETRAIN, TEST_TASK_OPTIONS

    meta = json.loads((tiny_model_dir / "latentrl_tiny.json").read_text())
    assert meta["task"] == "arith" and meta["pretrain"]["steps"] == TEST_PRETRAIN.steps
    assert meta["final_loss"] < 1.0
    # A second call finds the cached folder instead of training again.
    assert (
        pretrained_tiny_model("arith", TEST_TASK_OPTIONS, TEST_MODEL, TEST_PRETRAIN)
        == tiny_model_dir
    )
    # Competent: the model writes solutions in the task's format.
    from latentrl.rollout import SamplingParams

    rows = get_task("arith").load("test", limit=20, **TEST_TASK_OPTIONS)
    prompts = [hf_engine.tokenizer(row["prompt"])["input_ids"] for row in rows]
    outputs = hf_engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=48))
    finished = [out.completions[0] for out in outputs]
    assert sum("####" in c.text and c.finish_reason == "stop" for c in finished) >= 18


def test_cache_key_covers_settings(tmp_path):
    small = PretrainConfig(steps=2, batch_size=2, num_examples=50, warmup_steps=1)
    model = TinyModelConfig(vocab_size=300, num_layers=1)
    a = pretrained_tiny_model(
        "arith", {"steps": 1}, model, small, cache_dir=tmp_path, progress=False
    )
    b = pretrained_tiny_model(
        "arith", {"steps": 2}, model, small, cache_dir=tmp_path, progress=False
    )
    assert a != b and a.parent == b.parent == tmp_path / "tiny"
    assert not [
        p for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".")
    ]  # no staging left

    # Building leaves torch's global random state as it found it: a run that builds its
    # tiny model draws the same numbers as one that finds it cached.
    torch.manual_seed(5)
    pretrained_tiny_model("arith", {"steps": 3}, model, small, cache_dir=tmp_path, progress=False)
    after_building = torch.rand(3)
    torch.manual_seed(5)
    pretrained_tiny_model("arith", {"steps": 3}, model, small, cache_dir=tmp_path, progress=False)
    assert torch.equal(torch.rand(3), after_building)


def test_thoughts_show_the_worked_steps_of_direct_rows_in_the_latent_slot():
    task = get_task("arith")
    rows = task.load("train", limit=2, steps=2, max_value=9, direct=True)
    assert rows[0]["solution"] == f"#### {rows[0]['answer']}"
    always = PretrainConfig(thought_rate=1.0)
    prompt, target = pretraining_examples(task, rows, always)[0]
    prefix = rows[0]["prompt"][: -len("Answer:")]
    assert rows[0]["thought"].count("\n") == 1  # two worked steps, no answer line
    assert prompt == f"{prefix}{LATENT_START_TOKEN}{rows[0]['thought']}{LATENT_END_TOKEN}Answer:"
    assert target == f" #### {rows[0]['answer']}"
    never = PretrainConfig(thought_rate=0.0)
    assert pretraining_examples(task, rows, never)[0] == (rows[0]["prompt"], task.target(rows[0]))
