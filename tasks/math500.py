r"""math500: the 500 MATH competition problems of "Let's Verify Step by Step" (test only).

Read from the Hugging Face Hub (``HuggingFaceH4/MATH-500``) or from a local JSONL file
with the Hub's fields ``problem`` and ``answer`` and, optionally, ``solution``:
``load("test", limit, data_file=...)``. Answers are LaTeX (``\frac{14}{3}``) and are kept
as written; the prompt asks for the final answer in ``\boxed{}`` and the default rewards
check that format. A row without a worked solution gets ``\boxed{answer}`` as its
solution; the Hub's ``subject``, ``level`` and ``unique_id`` columns are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from .base import Task
from .sources import TableSource

HUB_ID = "HuggingFaceH4/MATH-500"
PROMPT_TEMPLATE = "Question: {question}\nPut the final answer in \\boxed{}.\nAnswer:"

HUB_SOURCE = TableSource(
    hub_id=HUB_ID,
    hub_splits=("test",),
    question_column="problem",
    answer_column="answer",
    solution_column="solution",
    answer_format="boxed",
)


def math500_rows(
    split: str = "test", data_file: str | os.PathLike[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of ``split`` from the JSONL ``data_file`` when given, else from the Hub."""
    if data_file is None:
        return HUB_SOURCE(split)
    return replace(HUB_SOURCE, hub_id=None, data_files={split: data_file})(split)


TASK = Task(
    name="math500",
    description="MATH-500 competition problems, answers in \\boxed{} (Hub or local JSONL).",
    source=math500_rows,
    splits=HUB_SOURCE.hub_splits,
    prompt_template=PROMPT_TEMPLATE,
    answer_format="boxed",
)
