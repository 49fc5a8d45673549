"""GSM8K: the real local files, the Hub code path (faked or local), and bad rows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets
import pytest

from latentrl.tasks import get_task
from latentrl.tasks.gsm8k import TASK
from latentrl.tasks.sources import read_hub

GOOD = {"question": "Sam has 2 pens and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_registered() -> None:
    assert get_task("gsm8k") is TASK
    assert TASK.splits == ("train", "test") and TASK.answer_format == "hash"


def test_local_files_load_every_row(gsm8k_dir: Path) -> None:
    test = TASK.load("test", data_dir=gsm8k_dir)
    train = TASK.load("train", data_dir=gsm8k_dir)
    assert (len(train), len(test)) == (7473, 1319)
    assert test.column_names == ["question", "prompt", "solution", "answer"]
    first = test[0]
    assert first["answer"] == "18"
    assert first["question"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert first["solution"] == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer’s market.\n#### 18"
    )
    for row in train.select(range(0, 7473, 7)).to_list() + test.to_list():
        assert "<<" not in row["solution"] and "," not in row["answer"]
        assert row["solution"].endswith(f"\n#### {row['answer']}")
        assert row["answer"].lstrip("-").isdigit()


def test_gold_answers_lose_their_commas(gsm8k_dir: Path) -> None:
    raw = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").open(encoding="utf-8")]
    index = next(i for i, r in enumerate(raw) if r["answer"].endswith("#### 1,080"))
    row = TASK.load("train", limit=index + 1, data_dir=gsm8k_dir)[index]
    assert row["answer"] == "1080" and row["solution"].endswith("\n#### 1080")


def test_env_variable_names_the_folder(gsm8k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTRL_GSM8K_DIR", str(gsm8k_dir))
    assert TASK.load("test", limit=2)["answer"] == ["18", "3"]


def test_without_a_folder_it_asks_the_hub(
    no_gsm8k_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_load_dataset(path: str, name: str | None = None, **kwargs: Any) -> datasets.Dataset:
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_list([GOOD, GOOD])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = TASK.load("test", limit=1)
    assert calls == [("openai/gsm8k", "main", {"split": "test"})]
    assert rows.to_list() == [
        {
            "question": GOOD["question"],
            "prompt": f"Question: {GOOD['question']}\nAnswer:",
            "solution": "2+3=5\n#### 5",
            "answer": "5",
        }
    ]


def test_hub_failure_says_what_was_asked_and_what_to_do(
    no_gsm8k_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"'openai/gsm8k'.*no network.*local files"):
        TASK.load("train")


def test_read_hub_with_a_real_local_dataset_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Hub is unreachable here; datasets.load_dataset reads a local folder the same way.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "gsm8k_like"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [GOOD])
    write_jsonl(folder / "test.jsonl", [GOOD, GOOD])
    records = list(read_hub(str(folder), None, "test"))
    assert [where for where, _ in records] == [f"{folder} test[0]", f"{folder} test[1]"]
    assert records[0][1] == GOOD


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"answer": GOOD["answer"]}, "line 3: column 'question': missing"),
        ({"question": "q"}, "line 3: column 'answer': missing"),
        ({"question": "q", "answer": "5"}, "line 3: column 'answer': no final answer"),
        ({"question": "q", "answer": "#### five"}, "line 3: column 'answer': unparseable gold"),
        ("{not json", "line 3: invalid JSON"),
        ("[1, 2]", "line 3: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_and_column(
    tmp_path: Path, bad: dict[str, str] | str, message: str
) -> None:
    path = write_jsonl(tmp_path / "test.jsonl", [GOOD, "", bad])  # line 2 is blank
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} {message}"):
        TASK.load("test", data_dir=tmp_path)


def test_missing_file_and_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"data file not found: {tmp_path / 'train.jsonl'}")
    ):
        TASK.load("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        TASK.load("validation", data_dir=tmp_path)
