"""Task, row checking and answer helpers (latentrl.tasks.base)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from latentrl.tasks.base import (
    COLUMNS,
    Task,
    canonical_answer,
    extract_final_answer,
    format_final_answer,
    make_example,
)


def two_rows(split: str, shout: bool = False) -> Iterator[dict[str, object]]:
    question = "WHAT IS 2 + 3?" if shout else "What is 2 + 3?"
    yield {"question": question, "solution": "2 + 3 = 5\n#### 5", "topic": "sums"}
    yield {"question": "What is 7 - 7?", "answer": 0, "topic": "differences"}


TINY = Task(name="tiny", description="two sums", source=two_rows, splits=("test",))


def test_load_builds_the_contract_columns() -> None:
    ds = TINY.load("test")
    assert ds.column_names == [*COLUMNS, "topic"]
    assert ds.to_list() == [
        {
            "question": "What is 2 + 3?",
            "prompt": "Question: What is 2 + 3?\nAnswer:",
            "solution": "2 + 3 = 5\n#### 5",
            "answer": "5",
            "topic": "sums",
        },
        {
            "question": "What is 7 - 7?",
            "prompt": "Question: What is 7 - 7?\nAnswer:",
            "solution": "#### 0",
            "answer": "0",
            "topic": "differences",
        },
    ]
    assert TINY.target(ds[0]) == " 2 + 3 = 5\n#### 5"


def test_load_limit_and_options() -> None:
    assert len(TINY.load("test", limit=1)) == 1
    assert TINY.load("test", shout=True)[0]["question"] == "WHAT IS 2 + 3?"
    empty = TINY.load("test", limit=0)
    assert len(empty) == 0 and empty.column_names == list(COLUMNS)


def test_load_errors_name_what_is_wrong() -> None:
    with pytest.raises(
        ValueError, match=r"task 'tiny': unknown split 'train'; splits: \('test',\)"
    ):
        TINY.load("train")
    with pytest.raises(ValueError, match="limit: must be >= 0"):
        TINY.load("test", limit=-1)
    with pytest.raises(ValueError, match="unknown option.*shuot; options: shout"):
        TINY.load("test", shuot=True)


def test_source_with_var_keywords_takes_any_option() -> None:
    def rows(split: str, **options: object) -> Iterator[dict[str, object]]:
        yield {"question": str(options), "answer": "1"}

    task = Task(name="kw", source=rows)
    assert task.load("train", anything=3)[0]["question"] == "{'anything': 3}"


def test_bad_rows_from_a_user_source_name_the_row_and_column() -> None:
    def rows(split: str) -> Iterator[dict[str, object]]:
        yield {"question": "fine", "answer": "1"}
        yield {"question": "no answer"}

    with pytest.raises(ValueError, match=r"task 'bad' train\[1\]: column 'answer': missing"):
        Task(name="bad", source=rows).load("train")


def test_prompt_template_keeps_other_braces_literal() -> None:
    task = Task(name="t", source=two_rows, prompt_template="Q: {question}\nIn \\boxed{}:")
    assert task.format_prompt("Is {x} odd?") == "Q: Is {x} odd?\nIn \\boxed{}:"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "name: must not be empty"),
        ({"prompt_template": "no placeholder"}, "prompt_template: must contain"),
        ({"answer_format": "latex"}, "answer_format: expected one of"),
        ({"splits": "test"}, "splits: expected a list of names"),
        ({"source": "rows.jsonl"}, "source: expected a callable"),
    ],
)
def test_task_validates_its_fields(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Task(**{"name": "t", "source": two_rows, **fields})


def test_task_stores_lists_as_tuples() -> None:
    task = Task(name="t", source=two_rows, splits=["a"])
    assert task.splits == ("a",) and task.kind == "text"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": None, "answer": "1"}, "column 'question': missing"),
        ({"question": 3, "answer": "1"}, "column 'question': expected a non-empty string"),
        ({"question": "q", "solution": 5}, "column 'solution': expected a string"),
        (
            {"question": "q", "answer": "twelve"},
            "column 'answer': unparseable gold answer 'twelve'",
        ),
        ({"question": "q", "answer": True}, "column 'answer': unparseable gold answer True"),
        (
            {"question": "q", "solution": "#### ?"},
            "column 'solution': unparseable gold answer '\\?'",
        ),
        (
            {"question": "q", "solution": "3 + 4 = 7\n#### 7", "answer": "8"},
            "column .solution.: final line .#### 7. disagrees",
        ),
    ],
)
def test_make_example_errors(row: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^rows.jsonl line 4: {message}"):
        make_example("rows.jsonl line 4", "hash", **row)


def test_make_example_error_uses_the_files_own_column_names() -> None:
    with pytest.raises(ValueError, match="column 'problem': missing"):
        make_example("f", "boxed", question=None, answer="1", names={"question": "problem"})


def test_make_example_rewrites_the_final_line_canonically() -> None:
    example = make_example("f", "hash", question="q", solution="a lot\n#### 1,080\n")
    assert example["solution"] == "a lot\n#### 1080" and example["answer"] == "1080"
    appended = make_example("f", "hash", question="q", solution="4 + 4 = 8", answer=8)
    assert appended["solution"] == "4 + 4 = 8\n#### 8"


def test_make_example_boxed() -> None:
    kept = make_example("f", "boxed", question="q", solution="so \\boxed{2}.", answer=" 2 ")
    assert kept == {"question": "q", "solution": "so \\boxed{2}.", "answer": "2"}
    appended = make_example("f", "boxed", question="q", solution="it is two", answer="2")
    assert appended["solution"] == "it is two\n\\boxed{2}"
    read = make_example("f", "boxed", question="q", solution="x = \\boxed{\\frac{1}{2}}")
    assert read["answer"] == "\\frac{1}{2}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("18", "18"),
        ("1,080", "1080"),
        ("1,000,000", "1000000"),
        ("-7", "-7"),
        ("0.50", "0.5"),
        ("3.0", "3"),
        (42, "42"),
        (2.5, "2.5"),
        ("1,2", None),  # not a thousands separator
        ("12 eggs", None),
        ("", None),
        (None, None),
        (False, None),
    ],
)
def test_canonical_answer_hash(value: object, expected: str | None) -> None:
    assert canonical_answer(value, "hash") == expected


def test_canonical_answer_boxed_keeps_latex() -> None:
    assert canonical_answer(" (1, 2) ", "boxed") == "(1, 2)"
    assert canonical_answer(7, "boxed") == "7"
    assert canonical_answer("  ", "boxed") is None


def test_extract_final_answer() -> None:
    assert extract_final_answer("#### 3\nmore\n#### 4", "hash") == "4"
    assert extract_final_answer("text #### 4", "hash") is None  # must start a line
    assert extract_final_answer("\\boxed{1} then \\boxed{{a}{b}}", "boxed") == "{a}{b}"
    assert extract_final_answer("\\boxed{unclosed", "boxed") is None
    assert format_final_answer("7", "hash") == "#### 7"
    assert format_final_answer("7", "boxed") == "\\boxed{7}"
