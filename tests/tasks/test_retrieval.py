"""Retrieval tasks: gsm8k_retrieval built from the real files, BEIR-layout folders, bad data."""

from __future__ import annotations

import re

import pytest

from latentrl.tasks import RetrievalData, get_task
from tests.conftest import shared_data_dir

GSM8K = shared_data_dir() / "gsm8k"


@pytest.mark.skipif(not GSM8K.is_dir(), reason="needs ../shared/data/gsm8k")
def test_gsm8k_retrieval_splits_and_corpus():
    task = get_task("gsm8k_retrieval", kind="retrieval")
    train, test = (task.load(split, data_dir=GSM8K) for split in ("train", "test"))
    assert (len(train.queries), len(test.queries)) == (1000, 319)
    assert not set(train.queries) & set(test.queries)
    assert len(train.corpus) == 8792 and train.corpus is test.corpus
    assert sum(doc_id.startswith("train-") for doc_id in train.corpus) == 7473

    first = test.queries["q-test-1000"]
    assert first.startswith("Doctor Jones is scheduling his time for Monday.")
    assert test.relevant("q-test-1000") == ["test-1000"]
    solution = test.corpus["test-1000"]
    assert solution.endswith("#### 1") and "<<" not in solution
    plan = test.rationales["q-test-1000"]
    assert plan.split("\n\n")[0] == "How many minutes will Doctor Jones spend on rounds?"
    assert len(plan.split("\n\n")) == 5
    # The plan is a reasoning plan, not the document: no worked step, no result line.
    assert "**" not in plan and "####" not in plan and "180" not in plan
    assert set(train.rationales) == set(train.queries)


@pytest.mark.skipif(not GSM8K.is_dir(), reason="needs ../shared/data/gsm8k")
def test_gsm8k_retrieval_corpus_keeps_the_first_train_solutions():
    task = get_task("gsm8k_retrieval", kind="retrieval")
    train, test = (task.load(s, data_dir=GSM8K, train_solutions=2) for s in ("train", "test"))
    assert train.corpus is test.corpus
    assert sorted(d for d in train.corpus if d.startswith("train-")) == ["train-0", "train-1"]
    assert len(train.corpus) == 1319 + 2
    # Every query keeps its own solution.
    assert all(test.relevant(q)[0] in test.corpus for q in test.queries)
    assert len(task.load("test", data_dir=GSM8K, train_solutions=0).corpus) == 1319
    with pytest.raises(ValueError, match="train_solutions: must be between 0 and 7473, got -1"):
        task.load("test", data_dir=GSM8K, train_solutions=-1)


def test_gsm8k_retrieval_needs_a_data_dir(monkeypatch):
    monkeypatch.delenv("LATENTRL_GSM8K_DIR", raising=False)
    with pytest.raises(ValueError, match="gsm8k_retrieval: data_dir: needs the local GSM8K folder"):
        get_task("gsm8k_retrieval", kind="retrieval").load("test")


def test_beir_folder_loads_queries_corpus_qrels_and_reasoning(animals_dir):
    data = get_task("bright", kind="retrieval").load("test", data_dir=animals_dir)
    assert list(data.queries) == [f"q{i}" for i in range(28, 36)]
    assert len(data.corpus) == 36
    assert data.qrels["q28"] == {"d28": 1}
    assert data.rationales == {
        "q28": "Find the puma.\n\nFind where it sleeps.",
        "q30": "Find the toad.\n\nFind where it sleeps.",
        "q32": "Find the wasp.\n\nFind where it sleeps.",
        "q34": "Find the wren.\n\nFind where it sleeps.",
    }
    assert data.corpus["d28"] == "The puma sleeps in the pond."
    assert data.limit(2).queries == {
        "q28": "Where does the puma sleep?",
        "q29": "Where does the seal sleep?",
    }


def test_bad_retrieval_data_is_named(animals_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'dev2'"):
        get_task("bright", kind="retrieval").load("dev2", data_dir=animals_dir)
    with pytest.raises(
        ValueError,
        match="task 'gsm8k' is a text task, where a retrieval task is needed",
    ):
        get_task("gsm8k", kind="retrieval")
    with pytest.raises(
        ValueError, match=re.escape(f"qrels file not found: {tmp_path}/qrels/test.tsv")
    ):
        get_task("bright", kind="retrieval").load("test", data_dir=tmp_path)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(
        ValueError, match="test.tsv line 2: expected query-id, corpus-id, integer score"
    ):
        get_task("bright", kind="retrieval").load("test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="qrels: query 'q1' has no relevant document"):
        RetrievalData(queries={"q1": "?"}, corpus={"d1": "x"}, qrels={"q1": {}})
    with pytest.raises(ValueError, match="relevance must be > 0, got 0"):
        RetrievalData(queries={"q1": "?"}, corpus={"d1": "x"}, qrels={"q1": {"d1": 0}})
