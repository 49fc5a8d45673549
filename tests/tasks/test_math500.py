"""MATH-500 from a small local JSONL the test writes, and the Hub code path (faked)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets
import pytest

from latentrl.tasks import get_task
from latentrl.tasks.math500 import TASK

ROWS = [
    {
        "problem": "Compute $\\frac{7}{3} + \\frac{7}{3}$.",
        "solution": "Adding gives $\\frac{14}{3}$, so the answer is $\\boxed{\\frac{14}{3}}$.",
        "answer": "\\frac{14}{3}",
        "subject": "Algebra",
        "level": 1,
    },
    {"problem": "Which point is it?", "answer": " (1, 2) ", "subject": "Geometry", "level": 3},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_registered_with_boxed_answers() -> None:
    assert get_task("math500") is TASK
    assert TASK.splits == ("test",) and TASK.answer_format == "boxed"
    assert "\\boxed{}" in TASK.format_prompt("What is 1 + 1?")


def test_local_file(tmp_path: Path) -> None:
    ds = TASK.load("test", data_file=write_jsonl(tmp_path / "math.jsonl", ROWS))
    assert ds.column_names == ["question", "prompt", "solution", "answer", "subject", "level"]
    first, second = ds.to_list()
    assert first["question"] == ROWS[0]["problem"]
    assert first["prompt"] == (
        f"Question: {ROWS[0]['problem']}\nPut the final answer in \\boxed{{}}.\nAnswer:"
    )
    assert (first["solution"], first["answer"]) == (ROWS[0]["solution"], "\\frac{14}{3}")
    # No worked solution: the target is just the boxed answer; LaTeX answers keep commas.
    assert (second["solution"], second["answer"]) == ("\\boxed{(1, 2)}", "(1, 2)")
    assert (second["subject"], second["level"]) == ("Geometry", 3)
    assert len(TASK.load("test", limit=1, data_file=tmp_path / "math.jsonl")) == 1


def test_bad_rows_name_the_files_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"question": "x", "answer": "1"}])
    with pytest.raises(ValueError, match=re.escape(f"{path} line 2: column 'problem': missing")):
        TASK.load("test", data_file=path)
    path = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "x", "answer": "  "}])
    with pytest.raises(ValueError, match=r"line 1: column 'answer': unparseable gold answer"):
        TASK.load("test", data_file=path)
    with pytest.raises(ValueError, match="unknown split 'train'"):
        TASK.load("train", data_file=path)


def test_without_a_file_it_asks_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path: str, name: str | None = None, **kwargs: Any) -> datasets.Dataset:
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_list([{**ROWS[0], "unique_id": "test/algebra/1.json"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    row = TASK.load("test")[0]
    assert calls == [("HuggingFaceH4/MATH-500", None, {"split": "test"})]
    assert (row["answer"], row["unique_id"]) == ("\\frac{14}{3}", "test/algebra/1.json")
