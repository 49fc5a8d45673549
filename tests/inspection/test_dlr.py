"""`latentrl inspect` on a DLR plugin: readings checked against the main model itself."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.cli import main
from latentrl.inspection.dlr import inspect_plugin, slot_kind
from latentrl.models.latent_plugin import LatentPlugin
from latentrl.models.tokens import LATENT_END_TOKEN, LATENT_START_TOKEN
from latentrl.tasks import get_task, registry
from tests.conftest import TEST_TASK_OPTIONS


@pytest.fixture(scope="module")
def main_model(tiny_model_dir):
    return (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


@pytest.fixture(scope="module")
def rows():
    return list(get_task("arith").load("test", limit=3, **TEST_TASK_OPTIONS))


def plugin_writing(plugin_dir, token_embedding: torch.Tensor) -> LatentPlugin:
    """The plugin, its projector made to output ``token_embedding`` for any latent."""
    plugin = LatentPlugin.from_pretrained(plugin_dir)
    linear = plugin.projector.net
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(token_embedding)
        rms = token_embedding.pow(2).mean().add(1e-6).sqrt()
        plugin.projector.log_scale.fill_(math.log(rms))
    return plugin


def test_a_latent_equal_to_a_token_embedding_reads_as_that_token(tiny_plugin_dir, main_model, rows):
    model, tokenizer = main_model
    token = tokenizer(" 7", add_special_tokens=False)["input_ids"][-1]
    embedding = model.get_input_embeddings().weight[token].detach()
    plugin = plugin_writing(tiny_plugin_dir, embedding)
    report = inspect_plugin(plugin, model, tokenizer, rows, top_k=5, samples=2)
    for question in report["questions"]:
        for slot in question["slots"]:
            text, cosine = slot["nearest"][0]
            assert text == tokenizer.decode([token])
            assert cosine == pytest.approx(1.0, abs=1e-4)
    assert report["pairwise_cosine"] == pytest.approx(1.0, abs=1e-4)  # the same for every question
    assert report["sample_spread"] == pytest.approx(0.0, abs=1e-5)  # the projector ignores z


def test_the_logit_lens_is_the_main_models_next_token_distribution(
    tiny_plugin_dir, main_model, rows
):
    """With every latent equal to a token's embedding, the prompt is that token written
    into the slot: a plain forward pass over the token ids must give the same readings."""
    model, tokenizer = main_model
    token = tokenizer(" 7", add_special_tokens=False)["input_ids"][-1]
    plugin = plugin_writing(tiny_plugin_dir, model.get_input_embeddings().weight[token].detach())
    report = inspect_plugin(plugin, model, tokenizer, rows[:1], top_k=3, samples=1)
    slots = plugin.settings.num_latents
    prefix = rows[0]["prompt"].removesuffix("Answer:") + LATENT_START_TOKEN
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    start = len(ids)
    ids += [token] * slots + tokenizer(LATENT_END_TOKEN + "Answer:", add_special_tokens=False)[
        "input_ids"
    ]
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0, start : start + slots].softmax(-1)
    top = probs.topk(3, dim=-1)
    for slot, values, indices in zip(
        report["questions"][0]["slots"], top.values, top.indices, strict=True
    ):
        assert [t for t, _ in slot["lens"]] == [tokenizer.decode([i]) for i in indices.tolist()]
        assert [p for _, p in slot["lens"]] == pytest.approx(values.tolist(), abs=1e-4)


def test_slot_kinds():
    assert slot_kind([(" 14", 0.9), ("7", 0.1)], "14", {"7", "14"}) == "answer"
    assert slot_kind([(" 7", 0.9)], "14", {"7", "14"}) == "intermediate"
    assert slot_kind([(" 7", 0.9)], "7", None) == "answer"
    assert slot_kind([(" 3", 0.9)], "14", {"7", "14"}) == "neither"
    assert slot_kind([(" 14", 0.9)], "9", {"14"}) == "intermediate"


def test_inspect_writes_its_report_and_pictures(tiny_plugin_dir, tmp_path, capsys):
    out = tmp_path / "inspect"
    options = [f"task.options.{k}={v}" for k, v in TEST_TASK_OPTIONS.items()]
    argv = ["inspect", "--plugin", str(tiny_plugin_dir), "--limit", "4", "--output-dir", str(out),
            *options]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "questions x slots                 4 x 4" in printed
    report = json.loads((out / "inspect.json").read_text())
    assert report["task"] == {"name": "arith", "options": TEST_TASK_OPTIONS}  # from the run
    assert sum(report["slot_kinds"].values()) == pytest.approx(1.0)
    assert sum(report["slot_kinds_other_question"].values()) == pytest.approx(1.0)
    assert report["intermediate_check"] is True
    for picture in ("slots.png", "aggregates.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG")


def test_bad_inputs_get_one_line(tiny_plugin_dir, tmp_path, capsys):
    assert main(["inspect", "--plugin", str(tmp_path), "--task", "arith"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a latent plugin" in err
    assert main(["inspect", "--plugin", str(tiny_plugin_dir), "model=org/other-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained for main model" in err


def test_a_task_without_worked_steps_is_not_checked_for_intermediates(
    tiny_plugin_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))  # the task file registers
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {n} + 1?", "answer": str(n + 1)}) + "\n"
                            for n in range(3)))  # fmt: skip
    task = tmp_path / "plain.yaml"
    task.write_text(f"name: plain_sums\ndata_files: {{test: {data}}}\n")
    out = tmp_path / "inspect"
    assert main(["inspect", "--plugin", str(tiny_plugin_dir), "--task", str(task),
                 "--output-dir", str(out)]) == 0  # fmt: skip
    assert "(task has no worked steps: not checked)" in capsys.readouterr().out
    assert json.loads((out / "inspect.json").read_text())["intermediate_check"] is False


def test_the_demo_prints_one_line_and_keeps_the_pictures(tiny_plugin_dir):
    from latentrl.config import DemoConfig, TaskConfig
    from latentrl.demo import inspect_line

    seed_dir = tiny_plugin_dir.parent
    line = inspect_line(seed_dir, DemoConfig(task=TaskConfig("arith", TEST_TASK_OPTIONS)))
    assert line.startswith("latents (latentrl inspect, 50 questions): name the gold answer in ")
    assert "\n" not in line
    assert (seed_dir / "inspect" / "slots.png").is_file()
