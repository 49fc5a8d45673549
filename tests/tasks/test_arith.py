"""The synthetic arithmetic task: determinism, disjoint splits, correct worked solutions."""

from __future__ import annotations

import operator
import re

import pytest

from latentrl.tasks import get_task
from latentrl.tasks.arith import TASK, generate

STEP = re.compile(r"^(\d+) ([-+*]) (\d+) = (\d+)$")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def check_row(row: dict[str, str], steps: int, max_value: int) -> str:
    """Check one worked solution line by line; return its canonical expression."""
    *step_lines, final = row["solution"].split("\n")
    assert final == f"#### {row['answer']}"
    assert len(step_lines) == steps
    start = int(re.search(r"has (\d+) ", row["question"]).group(1))  # type: ignore[union-attr]
    value, expression = start, str(start)
    for line in step_lines:
        match = STEP.match(line)
        assert match, line
        left, op, right, result = match.groups()
        assert int(left) == value, "each step continues from the previous result"
        assert OPS[op](int(left), int(right)) == int(result), line
        assert 1 <= int(right) <= max_value
        value = int(result)
        expression += op + right
    assert str(value) == row["answer"] and value >= 0
    assert row["prompt"] == f"Question: {row['question']}\nAnswer:"
    return expression


def test_registered_with_its_defaults() -> None:
    task = get_task("arith")
    assert task is TASK
    assert (task.kind, task.splits, task.answer_format) == ("text", ("train", "test"), "hash")


def test_default_sizes() -> None:
    assert len(TASK.load("test")) == 1000
    assert sum(1 for _ in generate("train")) == 20_000


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = TASK.load("train", limit=300, seed=7).to_list()
    assert TASK.load("train", limit=300, seed=7).to_list() == first
    other = TASK.load("train", limit=300, seed=8).to_list()
    assert sum(a["question"] != b["question"] for a, b in zip(first, other, strict=True)) > 290


def test_more_examples_extend_the_same_list() -> None:
    short = list(generate("train", num_examples=100, seed=3))
    long = list(generate("train", num_examples=1000, seed=3))
    assert long[:100] == short


def test_train_and_test_never_share_a_problem() -> None:
    train = {check_row(r, 2, 50) for r in TASK.load("train", num_examples=6000)}
    test = {check_row(r, 2, 50) for r in TASK.load("test", num_examples=2000)}
    other_seed = {check_row(r, 2, 50) for r in TASK.load("test", num_examples=2000, seed=1)}
    assert len(train) > 5000 and len(test) > 1500  # enough distinct problems to mean something
    assert not train & test
    assert not train & other_seed  # the split is a property of the problem, not of the seed


@pytest.mark.parametrize("steps", [1, 3, 6])
@pytest.mark.parametrize("max_value", [5, 200])
def test_every_step_is_right_and_knobs_set_difficulty(steps: int, max_value: int) -> None:
    for row in TASK.load("train", limit=300, steps=steps, max_value=max_value):
        check_row(row, steps, max_value)


def test_multiplication_option() -> None:
    rows = TASK.load("train", limit=300, ops="+-*", max_value=20).to_list()
    for row in rows:
        check_row(row, 2, 20)
    multiplications = [
        line for row in rows for line in row["solution"].split("\n") if " * " in line
    ]
    assert multiplications
    assert all(2 <= int(line.split()[2]) <= 9 for line in multiplications)
    assert all(" * " not in row["solution"] for row in TASK.load("train", limit=300))


def test_direct_option_keeps_the_problem_and_drops_the_steps() -> None:
    worked = TASK.load("test", limit=50, seed=2).to_list()
    direct = TASK.load("test", limit=50, seed=2, direct=True).to_list()
    for w, d in zip(worked, direct, strict=True):
        assert (d["question"], d["answer"]) == (w["question"], w["answer"])
        assert d["solution"] == f"#### {w['answer']}"


def test_vocabulary_is_small() -> None:
    words = {w for row in generate("train", num_examples=2000) for w in row["question"].split()}
    assert len({w for w in words if not w.rstrip(".?").isdigit()}) < 60


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"max_value": 0}, "max_value must be an integer >= 1"),
        ({"ops": "+/"}, "ops must be a non-empty string of"),
        ({"ops": "*", "max_value": 1}, "need max_value >= 2"),
        ({"num_examples": -1}, "num_examples must be an integer >= 0"),
        ({"stepz": 3}, "unknown option.*stepz; options: steps, max_value"),
    ],
)
def test_bad_knobs(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TASK.load("train", **options)


def test_too_small_a_problem_space_fails_instead_of_looping() -> None:
    # steps=1, max_value=1, ops="+" has one problem, 1+1: one split has none at all.
    sizes = {}
    for split in ("train", "test"):
        try:
            sizes[split] = len(TASK.load(split, steps=1, max_value=1, ops="+", num_examples=3))
        except ValueError as e:
            assert "found only 0 of 3" in str(e)
            sizes[split] = 0
    assert sorted(sizes.values()) == [0, 3]
