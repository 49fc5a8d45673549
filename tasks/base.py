r"""The :class:`Task`: a data source, a prompt template and gold answers (a text task).

A task turns the rows of its *source* into a ``datasets.Dataset`` whose string columns
every trainer and evaluator relies on:

- ``question``: the problem text;
- ``prompt``: ``task.format_prompt(question)``, what the model reads;
- ``solution``: a worked solution that ends with the final answer written in the task's
  answer format (``#### 18`` or ``\boxed{18}``), so ``task.target(row)`` is a complete
  supervised completion;
- ``answer``: the gold final answer in canonical form (``"1080"``, never ``"1,080"``).

Columns a source adds beyond these (``subject``, ``level``...) are kept.

A source is any callable ``source(split, **options)`` that yields mappings with a
``question`` and an ``answer`` and/or a ``solution``: the gold answer is read from the
solution's final line when the row has none, and a missing solution becomes just the final
answer line.

>>> def rows(split):
...     yield {"question": "What is 1 + 1?", "answer": "2"}
...     yield {"question": "What is 3 - 1?", "solution": "3 - 1 = 2\n#### 2"}
>>> task = Task(name="tiny", description="two sums", source=rows, splits=("test",))
>>> ds = task.load("test")
>>> ds[0]["prompt"]
'Question: What is 1 + 1?\nAnswer:'
>>> [(row["solution"], row["answer"]) for row in ds]
[('#### 2', '2'), ('3 - 1 = 2\n#### 2', '2')]
>>> task.target(ds[1])
' 3 - 1 = 2\n#### 2'
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from latentrl.rewards.extraction import box_contents

if TYPE_CHECKING:
    import datasets

AnswerFormat = Literal["hash", "boxed"]
"""How a solution (and a model's completion) states its final answer:
``hash`` is a last line ``#### 18`` (GSM8K style, numeric answers only);
``boxed`` is ``\\boxed{...}`` anywhere in the text, the last one counting (MATH style)."""

Source = Callable[..., Iterable[Mapping[str, Any]]]
"""``source(split, **options)`` -> rows with ``question`` and ``answer`` and/or ``solution``."""

DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
ANSWER_INSTRUCTIONS: dict[str, str] = {
    "hash": "Solve it step by step. Then write the final answer on the last line: '####' "
    "followed by the number.",
    "boxed": "Solve it step by step. Then write the final answer in \\boxed{}.",
}
"""What a chat prompt asks for, by answer format (a task's ``chat_instruction`` overrides)."""
COLUMNS = ("question", "prompt", "solution", "answer")
"""The string columns of every loaded dataset, in this order, before any extra columns."""

# A number as datasets write it: optional thousands separators, optional decimals.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@dataclass(frozen=True, kw_only=True)
class Task:
    """A named task; see the module docstring for the columns :meth:`load` returns."""

    kind: ClassVar[str] = "text"
    """The registry's kind of task (``latentrl tasks``); image QA and retrieval tasks are
    :class:`~latentrl.tasks.vqa.VQATask` and :class:`~latentrl.tasks.retrieval.RetrievalTask`."""

    name: str
    """Registry name, e.g. ``"gsm8k"``."""
    description: str = ""
    """One line for ``latentrl`` listings."""
    source: Source
    """Yields the raw rows of a split; its keyword arguments are the task's load options."""
    splits: tuple[str, ...] = ("train", "test")
    """The splits :meth:`load` accepts."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """Text around the question; ``{question}`` is the only placeholder, other braces
    (``\\boxed{}``) are literal."""
    answer_format: AnswerFormat = "hash"
    """How solutions state the final answer; rewards check completions the same way."""
    chat_instruction: str | None = None
    """What a chat prompt adds after the question (default: how to state the final answer
    in ``answer_format``, see :data:`ANSWER_INSTRUCTIONS`); models without a chat template
    read ``prompt_template`` instead."""

    def __post_init__(self) -> None:
        # Lists are accepted (YAML gives lists) but stored as tuples: a Task is frozen.
        if isinstance(self.splits, str) or not all(isinstance(v, str) for v in self.splits):
            raise ValueError(f"splits: expected a list of names, got {self.splits!r}")
        object.__setattr__(self, "splits", tuple(self.splits))
        if self.chat_instruction is not None and not isinstance(self.chat_instruction, str):
            raise ValueError(f"chat_instruction: expected a string, got {self.chat_instruction!r}")
        for name in ("name", "description", "prompt_template"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a string, got {getattr(self, name)!r}")
        if not self.name:
            raise ValueError("name: must not be empty")
        if "{question}" not in self.prompt_template:
            raise ValueError(
                f"prompt_template: must contain {{question}}: {self.prompt_template!r}"
            )
        check_answer_format(self.answer_format)
        if not callable(self.source):
            raise ValueError(f"source: expected a callable, got {self.source!r}")

    def format_prompt(self, question: str) -> str:
        # str.replace, not str.format: templates and questions may hold LaTeX braces.
        return self.prompt_template.replace("{question}", question)

    def chat_message(self, question: str) -> str:
        """The user turn of a chat prompt: the question, then how to answer it."""
        return f"{question}\n\n{self.chat_instruction or ANSWER_INSTRUCTIONS[self.answer_format]}"

    def target(self, row: Mapping[str, Any]) -> str:
        """The supervised completion that follows ``row["prompt"]``."""
        return " " + row["solution"]

    def load(self, split: str, limit: int | None = None, **options: Any) -> datasets.Dataset:
        """The first ``limit`` rows (all when None) of ``split``; ``options`` go to the source.

        Raises ValueError for an unknown split or option, and for a bad row (naming where
        it is and which column is wrong).
        """
        if split not in self.splits:
            raise ValueError(f"task {self.name!r}: unknown split {split!r}; splits: {self.splits}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        self._check_options(options)
        rows = itertools.islice(self.source(split, **options), limit)
        examples = []
        for index, row in enumerate(rows):
            # Any callable can be a source, so every row is checked here. Rows of a
            # TableSource were already checked where their file and line are known; a second
            # check costs little and changes nothing.
            example = make_example(
                f"task {self.name!r} {split}[{index}]",
                self.answer_format,
                question=row.get("question"),
                solution=row.get("solution"),
                answer=row.get("answer"),
            )
            example["prompt"] = self.format_prompt(example["question"])
            extras = {k: v for k, v in row.items() if k not in COLUMNS}
            examples.append({column: example[column] for column in COLUMNS} | extras)
        return _to_dataset(examples)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        # A typo in a config's task options should fail here, naming the task and the choices.
        params = list(inspect.signature(self.source).parameters.values())[1:]  # [0] is split
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        known = [p.name for p in params]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"task {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                f"options: {', '.join(known) or 'none'}"
            )


def check_answer_format(value: Any) -> None:
    if value not in get_args(AnswerFormat):
        raise ValueError(f"answer_format: expected one of {get_args(AnswerFormat)}, got {value!r}")


def make_example(
    where: str,
    answer_format: AnswerFormat,
    *,
    question: Any,
    solution: Any = None,
    answer: Any = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    r"""Check one row and return its ``question``, ``solution`` and canonical ``answer``.

    ``where`` (file and line, or dataset and index) and the row's own column ``names``
    (ours by default) make the error messages point at the bad cell.

    >>> make_example("x.jsonl line 1", "hash", question="Q", solution="2 * 3 = 6\n#### 6")
    {'question': 'Q', 'solution': '2 * 3 = 6\n#### 6', 'answer': '6'}
    >>> make_example("x.jsonl line 2", "hash", question="Q", answer="1,080")["solution"]
    '#### 1080'
    >>> make_example("x.jsonl line 3", "hash", question="Q", solution="no final line")
    Traceback (most recent call last):
    ValueError: x.jsonl line 3: column 'solution': no final answer ('#### N') to read the gold answer from
    """
    names = {"question": "question", "solution": "solution", "answer": "answer", **(names or {})}

    def fail(column: str, problem: str) -> ValueError:
        return ValueError(f"{where}: column {names[column]!r}: {problem}")

    if question is None:
        raise fail("question", "missing")
    if not isinstance(question, str) or not question.strip():
        raise fail("question", f"expected a non-empty string, got {question!r}")
    if solution is not None and not isinstance(solution, str):
        raise fail("solution", f"expected a string, got {solution!r}")

    if answer is None:
        if solution is None:
            raise fail("answer", "missing")
        answer = extract_final_answer(solution, answer_format)
        if answer is None:
            shape = format_final_answer("N", answer_format)
            raise fail("solution", f"no final answer ({shape!r}) to read the gold answer from")
        answer_column = "solution"
    else:
        answer_column = "answer"
    gold = canonical_answer(answer, answer_format)
    if gold is None:
        raise fail(
            answer_column,
            f"unparseable gold answer {answer!r} (expected "
            f"{'a number' if answer_format == 'hash' else 'a non-empty string'})",
        )
    return {
        "question": question,
        "solution": _end_with_answer(solution, gold, answer_format, fail),
        "answer": gold,
    }


def canonical_answer(value: Any, answer_format: AnswerFormat) -> str | None:
    r"""The canonical string of a gold answer, or None when it cannot be one.

    ``hash`` answers are numbers: commas go and equal numbers get equal strings. ``boxed``
    answers are LaTeX and are only stripped.

    >>> [canonical_answer(v, "hash") for v in ("1,080", " -3 ", 18, 2.50, "18.0", "18 eggs")]
    ['1080', '-3', '18', '2.5', '18', None]
    >>> canonical_answer(" \\frac{1}{2} ", "boxed")
    '\\frac{1}{2}'
    """
    # JSON gives numbers as int or float; true/false (a bool is an int) is never an answer.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    if answer_format == "boxed":
        return text or None
    if not _NUMBER.fullmatch(text):
        return None
    number = Decimal(text.replace(",", ""))  # valid: _NUMBER admits decimals only
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def extract_final_answer(text: str, answer_format: AnswerFormat) -> str | None:
    r"""The final answer a text states (not canonicalised), or None when it states none.

    >>> extract_final_answer("5 + 4 = 9\n#### 9", "hash")
    '9'
    >>> extract_final_answer(r"so $x = \boxed{\frac{1}{2}}$.", "boxed")
    '\\frac{1}{2}'
    >>> extract_final_answer("no answer here", "boxed") is None
    True
    """
    if answer_format == "hash":
        finals = re.findall(r"^####(.*)$", text, flags=re.MULTILINE)
        return finals[-1].strip() if finals else None
    boxes = box_contents(text)  # the rewards' parser: nested braces, unclosed boxes skipped
    return boxes[-1] if boxes else None


def format_final_answer(answer: str, answer_format: AnswerFormat) -> str:
    r"""The final-answer text of a solution: ``#### 18`` or ``\boxed{18}``."""
    return f"#### {answer}" if answer_format == "hash" else f"\\boxed{{{answer}}}"


def _end_with_answer(
    solution: str | None,
    gold: str,
    answer_format: AnswerFormat,
    fail: Callable[[str, str], ValueError],
) -> str:
    # Every solution ends in its final answer, written canonically, so that target() teaches
    # exactly the form the format and correctness rewards look for.
    final = format_final_answer(gold, answer_format)
    if solution is None or not solution.strip():
        return final
    solution = solution.rstrip()
    if answer_format == "boxed":
        return solution if "\\boxed{" in solution else f"{solution}\n{final}"
    body, _, last = solution.rpartition("\n")
    if not last.startswith("####"):
        return f"{solution}\n{final}"
    if canonical_answer(last[4:], "hash") != gold:
        raise fail("solution", f"final line {last!r} disagrees with the gold answer {gold!r}")
    return f"{body}\n{final}" if body else final


def _to_dataset(examples: list[dict[str, Any]]) -> datasets.Dataset:
    import datasets  # deferred: `import latentrl.tasks` stays fast for the CLI

    if not examples:  # from_list([]) would have no columns at all
        features = datasets.Features({c: datasets.Value("string") for c in COLUMNS})
        return datasets.Dataset.from_dict({c: [] for c in COLUMNS}, features=features)
    return datasets.Dataset.from_list(examples)
