"""arith: synthetic multi-step integer arithmetic word problems with worked solutions.

Each problem starts from a number of objects and applies ``steps`` operations to it, left
to right; the worked solution has one line per operation and the final answer line::

    Question: Zoe has 42 stamps. She loses 15. She buys 23 more. How many stamps does Zoe have now?
    Answer: 42 - 15 = 27
    27 + 23 = 50
    #### 50

Choices, and why:

- operands are drawn from ``[1, max_value]``; multipliers (``ops="+-*"``) from
  ``[2, min(9, max_value)]`` so that numbers stay within reach of a tiny model;
- answers are never negative: a subtraction takes at most what there is (word problems
  do not give away more than they have), and from 0 it becomes an addition;
- the vocabulary is small (8 names, 8 objects, 3 phrasings per operation) so that tiny
  models spend their capacity on the arithmetic;
- **splits are fixed by the problem, not by the random stream**: a problem belongs to the
  test split when a stable hash of its canonical expression (``42-15+23``) falls in the
  lowest :data:`TEST_FRACTION`, so train and test never share an expression, and changing
  ``num_examples`` or ``seed`` never moves a problem between splits. Within a split,
  rows come from ``random.Random(f"arith/{seed}/{split}")`` (deterministic on every
  platform), so a larger ``num_examples`` extends the same list.

Load options: ``steps=2``, ``max_value=50``, ``ops="+-"``, ``num_examples`` (default
20,000 for train, 1,000 for test), ``seed=0`` and ``direct=False`` (True: the solution is
only ``#### N``, for training answers without worked steps). Every row also has a
``thought`` column: the worked steps without the answer line.

>>> row = TASK.load("test", limit=1, steps=3, max_value=9)[0]
>>> print(row["prompt"])
Question: Ben has 8 cards. He loses 1. He finds 7 more. He gives away 8. How many cards does Ben have now?
Answer:
>>> print(row["solution"])
8 - 1 = 7
7 + 7 = 14
14 - 8 = 6
#### 6
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from .base import Task

NAMES = (
    ("Tom", "He"), ("Ann", "She"), ("Sam", "He"), ("Mia", "She"),
    ("Ben", "He"), ("Eva", "She"), ("Leo", "He"), ("Zoe", "She"),
)  # fmt: skip
OBJECTS = ("apples", "books", "cards", "coins", "marbles", "pens", "shells", "stamps")
PHRASES = {
    "+": ("{he} gets {n} more.", "{he} buys {n} more.", "{he} finds {n} more."),
    "-": ("{he} gives away {n}.", "{he} loses {n}.", "{he} sells {n}."),
    "*": ("{he} then has {n} times as many.",),
}
MAX_MULTIPLIER = 9
TEST_FRACTION = 0.1
DEFAULT_NUM_EXAMPLES = {"train": 20_000, "test": 1_000}

Operation = tuple[str, int]  # ("+", 5): add 5


def generate(
    split: str,
    *,
    steps: int = 2,
    max_value: int = 50,
    ops: str = "+-",
    num_examples: int | None = None,
    seed: int = 0,
    direct: bool = False,
) -> Iterator[dict[str, str]]:
    """Yield ``num_examples`` rows (``question``, ``solution``, ``answer``) of ``split``."""
    _check_knobs(steps, max_value, ops)
    wanted = DEFAULT_NUM_EXAMPLES[split] if num_examples is None else num_examples
    if not isinstance(wanted, int) or wanted < 0:
        raise ValueError(f"arith: num_examples must be an integer >= 0, got {num_examples!r}")
    rng = random.Random(f"arith/{seed}/{split}")
    # Small problem spaces (steps=1, max_value=3) may hold few or no test expressions; give
    # up with a clear message instead of looping forever.
    max_draws = 100 * wanted + 10_000
    made = draws = 0
    while made < wanted:
        if draws == max_draws:
            raise ValueError(
                f"arith: found only {made} of {wanted} {split} problems in {draws} draws: "
                f"steps={steps}, max_value={max_value} allow too few distinct problems"
            )
        draws += 1
        start, operations = _sample_problem(rng, steps, max_value, ops)
        if _in_test_split(start, operations) == (split == "test"):
            made += 1
            yield _render(rng, start, operations, direct)


def _check_knobs(steps: int, max_value: int, ops: str) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"arith: steps must be an integer >= 1, got {steps!r}")
    if not isinstance(max_value, int) or max_value < 1:
        raise ValueError(f"arith: max_value must be an integer >= 1, got {max_value!r}")
    if not ops or set(ops) - set(PHRASES):
        raise ValueError(f"arith: ops must be a non-empty string of + - *, got {ops!r}")
    if "*" in ops and max_value < 2:
        raise ValueError("arith: ops with '*' need max_value >= 2 (multipliers start at 2)")


def _sample_problem(
    rng: random.Random, steps: int, max_value: int, ops: str
) -> tuple[int, list[Operation]]:
    value = start = rng.randint(1, max_value)
    operations = []
    for _ in range(steps):
        op = rng.choice(ops)
        if op == "-" and value == 0:
            op = "+"  # answers stay >= 0
        if op == "+":
            operand = rng.randint(1, max_value)
        elif op == "-":
            operand = rng.randint(1, min(max_value, value))
        else:
            operand = rng.randint(2, min(MAX_MULTIPLIER, max_value))
        value = _apply(value, op, operand)
        operations.append((op, operand))
    return start, operations


def _apply(value: int, op: str, operand: int) -> int:
    return value + operand if op == "+" else value - operand if op == "-" else value * operand


def _in_test_split(start: int, operations: list[Operation]) -> bool:
    # The canonical expression ("42-15+23", read left to right) ignores names and phrasing,
    # so one problem told two ways is always in one split.
    expression = str(start) + "".join(f"{op}{operand}" for op, operand in operations)
    digest = hashlib.blake2b(expression.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < TEST_FRACTION * 2**64


def _render(
    rng: random.Random, start: int, operations: list[Operation], direct: bool
) -> dict[str, str]:
    name, he = rng.choice(NAMES)
    thing = rng.choice(OBJECTS)
    sentences = [f"{name} has {start} {thing}."]
    lines = []
    value = start
    for op, operand in operations:
        sentences.append(rng.choice(PHRASES[op]).format(he=he, n=operand))
        new_value = _apply(value, op, operand)
        lines.append(f"{value} {op} {operand} = {new_value}")
        value = new_value
    sentences.append(f"How many {thing} does {name} have now?")
    lines.append(f"#### {value}")
    return {
        "question": " ".join(sentences),
        "solution": lines[-1] if direct else "\n".join(lines),
        "answer": str(value),
        # The worked steps without the answer line, also for direct rows: what a main
        # model pre-trained with thoughts reads between the latent markers.
        "thought": "\n".join(lines[:-1]),
    }


TASK = Task(
    name="arith",
    description="Synthetic multi-step integer word problems (+, -, optionally *), worked steps.",
    source=generate,
    splits=("train", "test"),
    answer_format="hash",
)
