r"""Task rows from JSONL files or a Hugging Face Hub dataset, with columns renamed.

:class:`TableSource` is the source of ``gsm8k``, ``math500`` and every YAML-described
task. It reads records, maps the dataset's own column names onto ``question``,
``solution`` and ``answer``, and checks each row with :func:`~latentrl.tasks.base.make_example`
so that an error names the file and line (or dataset and index) and the file's column.

>>> source = TableSource(data_files={"test": "sums.jsonl"}, question_column="q", answer_column="a")
>>> source.to_example("sums.jsonl line 1", {"q": "2 + 2?", "a": 4, "topic": "sums"})
{'question': '2 + 2?', 'solution': '#### 4', 'answer': '4', 'topic': 'sums'}
>>> source.to_example("sums.jsonl line 2", {"q": "2 + 3?"})
Traceback (most recent call last):
ValueError: sums.jsonl line 2: column 'a': missing
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import COLUMNS, AnswerFormat, check_answer_format, make_example

# GSM8K's calculator annotations: "16 - 3 = <<16-3=13>>13" reads "16 - 3 = 13" without them.
_CALCULATOR_MARK = re.compile(r"<<[^<>]*>>")

Record = tuple[str, dict[str, Any]]
"""A raw record and where it came from ("train.jsonl line 3", "openai/gsm8k test[2]")."""


@dataclass(frozen=True, kw_only=True)
class TableSource:
    """Rows from one JSONL file per split, or from a Hub dataset (exactly one of the two)."""

    data_files: Mapping[str, str | Path] | None = field(default=None, hash=False)  # a dict
    """Split name -> JSONL file (one JSON object per line)."""
    hub_id: str | None = None
    """Hub dataset id for ``datasets.load_dataset``, e.g. ``"openai/gsm8k"``."""
    hub_config: str | None = None
    """The Hub dataset's config name, e.g. ``"main"``."""
    hub_splits: tuple[str, ...] = ("train", "test")
    """The Hub dataset's splits."""
    question_column: str = "question"
    answer_column: str | None = "answer"
    """Gold answers; None reads them from the final answer of ``solution_column``."""
    solution_column: str | None = None
    """Worked solutions; optional per row when ``answer_column`` is set."""
    answer_format: AnswerFormat = "hash"
    strip_calculator_marks: bool = False
    """Remove GSM8K's ``<<a=b>>`` marks from solutions."""

    def __post_init__(self) -> None:
        if (self.data_files is None) == (self.hub_id is None):
            raise ValueError("give exactly one of data_files and hub_id")
        if self.data_files is not None and not (
            isinstance(self.data_files, Mapping) and self.data_files
        ):
            raise ValueError(
                f"data_files: expected a split -> file mapping, got {self.data_files!r}"
            )
        if self.question_column is None:
            raise ValueError("question_column: required")
        for name in ("question_column", "answer_column", "solution_column", "hub_id", "hub_config"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
        if self.answer_column is None and self.solution_column is None:
            raise ValueError("give answer_column, solution_column or both")
        check_answer_format(self.answer_format)
        if not isinstance(self.strip_calculator_marks, bool):
            raise ValueError(
                f"strip_calculator_marks: expected true or false, "
                f"got {self.strip_calculator_marks!r}"
            )
        object.__setattr__(self, "hub_splits", tuple(self.hub_splits))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.data_files) if self.data_files is not None else self.hub_splits

    def __call__(self, split: str) -> Iterator[dict[str, Any]]:
        records = (
            read_jsonl(self.data_files[split])
            if self.data_files is not None
            else read_hub(self.hub_id, self.hub_config, split)
        )
        for where, record in records:
            yield self.to_example(where, record)

    def to_example(self, where: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Rename one record's columns and check it; other columns pass through."""
        if self.answer_column is not None and self.answer_column not in record:
            raise ValueError(f"{where}: column {self.answer_column!r}: missing")
        solution = record.get(self.solution_column) if self.solution_column else None
        if solution is None and self.answer_column is None:
            raise ValueError(f"{where}: column {self.solution_column!r}: missing")
        if self.strip_calculator_marks and isinstance(solution, str):
            solution = _CALCULATOR_MARK.sub("", solution)
        example = make_example(
            where,
            self.answer_format,
            question=record.get(self.question_column),
            solution=solution,
            answer=record.get(self.answer_column) if self.answer_column else None,
            names={
                "question": self.question_column,
                "solution": self.solution_column or "solution",
                "answer": self.answer_column or "answer",
            },
        )
        consumed = {self.question_column, self.answer_column, self.solution_column, *COLUMNS}
        return example | {k: v for k, v in record.items() if k not in consumed}


def read_jsonl(path: str | Path) -> Iterator[Record]:
    """The JSON objects of a JSONL file with their line numbers; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file not found: {path}")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def read_hub(hub_id: str, config: str | None, split: str) -> Iterator[Record]:
    """The rows of a Hub dataset split (``datasets`` caches the download)."""
    import datasets  # deferred: heavy, and only this path needs it

    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # network, auth, or a missing dataset: say what was asked for
        raise RuntimeError(
            f"could not load {hub_id!r} (config {config!r}, split {split!r}) with "
            f"datasets.load_dataset: {e}. Without network access, point the task at local "
            "files instead (see the task's load options)."
        ) from e
    for index, record in enumerate(dataset):
        yield f"{hub_id} {split}[{index}]", record
