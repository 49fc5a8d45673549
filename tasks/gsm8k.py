"""gsm8k: grade-school math word problems (Cobbe et al., 2021), 7,473 train / 1,319 test.

Read from the Hugging Face Hub (``openai/gsm8k``, config ``main``) or, offline, from a
folder holding ``train.jsonl`` and ``test.jsonl`` with the Hub's fields ``question`` and
``answer``: ``load(split, limit, data_dir=...)``, or set ``LATENTRL_GSM8K_DIR``.

The dataset's ``answer`` field is a worked solution with calculator marks (``<<16-3=13>>``)
and a final line ``#### N``. Rows keep it, without the marks, as ``solution``; ``answer``
is N without commas (``#### 1,080`` -> ``"1080"``, and the solution's last line is written
``#### 1080`` the same way).

The first test row::

    question: Janet’s ducks lay 16 eggs per day. She eats three for breakfast [...]
    solution: Janet sells 16 - 3 - 4 = 9 duck eggs a day.
              She makes 9 * 2 = $18 every day at the farmer’s market.
              #### 18
    answer:   18
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .base import Task
from .sources import TableSource

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
DATA_DIR_ENV = "LATENTRL_GSM8K_DIR"
"""Environment variable naming a local folder with ``train.jsonl`` and ``test.jsonl``."""

HUB_SOURCE = TableSource(
    hub_id=HUB_ID,
    hub_config=HUB_CONFIG,
    question_column="question",
    answer_column=None,  # the gold answer is the solution's "#### N" line
    solution_column="answer",
    answer_format="hash",
    strip_calculator_marks=True,
)


def gsm8k_rows(
    split: str, data_dir: str | os.PathLike[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of ``split`` from ``data_dir``, else ``$LATENTRL_GSM8K_DIR``, else the Hub."""
    data_dir = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        return HUB_SOURCE(split)
    local = replace(
        HUB_SOURCE,
        hub_id=None,
        hub_config=None,
        data_files={split: Path(data_dir) / f"{split}.jsonl"},
    )
    return local(split)


TASK = Task(
    name="gsm8k",
    description="GSM8K grade-school math word problems (Hub openai/gsm8k or local JSONL).",
    source=gsm8k_rows,
    splits=HUB_SOURCE.hub_splits,
    answer_format="hash",
)
