"""`latentrl inspect --retriever`: each latent step's soft-token distribution, checked
against the backbone's own next-token distribution."""

from __future__ import annotations

import json

import pytest
import torch

from latentrl.cli import main
from latentrl.inspection.laser import inspect_retriever
from latentrl.models.retriever import LaSERRetriever
from tests.trainers.test_laser import train_args


@pytest.fixture(scope="module")
def retriever_run(tiny_model_dir, animals_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("laser-run")
    cache = tmp_path_factory.mktemp("rationales")
    assert main(train_args(tiny_model_dir, animals_dir, out, cache, "loop.steps=1")) == 0
    return out


def test_the_first_step_reads_the_next_token_distribution_after_the_query(retriever_run):
    retriever = LaSERRetriever.from_pretrained(retriever_run / "retriever")
    queries = ["Where does the cat sleep?", "Where does the owl sleep?"]
    report = inspect_retriever(retriever, queries, ["Find the cat.", None], top_k=3)
    steps = retriever.settings.latent_steps
    assert [len(q["steps"]) for q in report["queries"]] == [steps, steps]
    ids = retriever.tokenizer(queries[0], add_special_tokens=False)["input_ids"] + [retriever.eos]
    with torch.no_grad():
        probs = retriever.causal_lm(torch.tensor([ids])).logits[0, -1].softmax(-1)
    top = probs.topk(3)
    first = report["queries"][0]["steps"][0]
    assert [t for t, _ in first] == [retriever.tokenizer.decode([i]) for i in top.indices.tolist()]
    assert [p for _, p in first] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert "steps_naming_own_rationale" not in report  # one query with a rationale: no chance level


def test_inspect_writes_its_report_and_picture(retriever_run, animals_dir, tmp_path, capsys):
    out = tmp_path / "inspect"
    argv = ["inspect", "--retriever", str(retriever_run / "retriever"), "--limit", "8",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "queries x latent steps            8 x " in printed
    report = json.loads((out / "inspect.json").read_text())
    assert report["task"]["name"] == "bright"  # read from the run's config.yaml
    assert 0 <= report["steps_naming_own_rationale"] <= 1
    assert (out / "steps.png").read_bytes().startswith(b"\x89PNG")


def test_a_plugin_and_a_retriever_at_once_is_refused(retriever_run, capsys):
    folder = str(retriever_run / "retriever")
    assert main(["inspect", "--retriever", folder, "--plugin", folder]) == 2
    assert "give exactly one of plugin (DLR) and retriever (LaSER)" in capsys.readouterr().err
