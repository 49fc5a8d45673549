r"""gsm8k_retrieval: find a GSM8K test question's own worked solution among all of them.

- query: a test question;
- corpus: every worked solution of train and test (7,473 + 1,319 = 8,792 documents, with
  calculator marks removed), so each query has one relevant document and 8,791 distractors
  written in the same style about similar quantities;
- rationale (explicit view): the question's sub-questions from ``test_socratic.jsonl``
  (the text before each ``**``), one segment each, separated by blank lines: a reasoning
  plan that never contains the solution's numbers;
- splits: the first ``num_train`` test questions (default 1,000) are ``train``, the rest
  (319) are ``test``; a question is in exactly one of them;
- ``train_solutions``: how many of the train solutions join the corpus as distractors (the
  first ones; default all 7,473). ``0`` leaves the 1,319 test solutions, a corpus a real
  LLM backbone encodes in minutes on a CPU rather than an hour.

Built offline from ``data_dir`` (``train.jsonl``, ``test.jsonl``, ``test_socratic.jsonl``),
else ``$LATENTRL_GSM8K_DIR``; ``load("test", data_dir="../shared/data/gsm8k")``.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from .gsm8k import DATA_DIR_ENV, gsm8k_rows
from .retrieval import RetrievalData, RetrievalTask
from .sources import read_jsonl

NUM_TRAIN_QUERIES = 1000
SUBQUESTION_MARK = " ** "


def socratic_plan(solution: str, where: str = "socratic solution") -> str:
    r"""The sub-questions of a socratic solution, one blank-line-separated segment each.

    >>> socratic_plan("How many are left? ** 16 - 3 = 13 are left.\nHow much? ** 13 * 2 = 26\n#### 26")
    'How many are left?\n\nHow much?'
    """
    steps = [line for line in solution.split("\n") if not line.startswith("####")]
    if not steps or any(SUBQUESTION_MARK not in step for step in steps):
        raise ValueError(f"{where}: every step must read 'sub-question ** worked step'")
    return "\n\n".join(step.split(SUBQUESTION_MARK, 1)[0].strip() for step in steps)


def load_gsm8k_retrieval(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    num_train: int = NUM_TRAIN_QUERIES,
    train_solutions: int | None = None,
) -> RetrievalData:
    """One split of gsm8k_retrieval (see the module docstring)."""
    data_dir = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise ValueError(
            f"gsm8k_retrieval: data_dir: needs the local GSM8K folder (train.jsonl, test.jsonl, "
            f"test_socratic.jsonl); pass task.options.data_dir or set ${DATA_DIR_ENV}"
        )
    data_dir = str(Path(data_dir).resolve())
    questions, plans = _test_questions(data_dir)
    if not 0 < num_train < len(questions):
        raise ValueError(f"num_train: must be between 1 and {len(questions) - 1}, got {num_train}")
    corpus = _corpus(data_dir, train_solutions)
    indices = range(num_train) if split == "train" else range(num_train, len(questions))
    queries = {f"q-test-{i}": questions[i] for i in indices}
    return RetrievalData(
        queries=queries,
        corpus=corpus,
        qrels={query_id: {query_id[2:]: 1} for query_id in queries},  # q-test-7 -> test-7
        rationales={f"q-test-{i}": plans[i] for i in indices},
    )


TASK = RetrievalTask(
    name="gsm8k_retrieval",
    description="GSM8K test questions -> their own worked solution among all 8,792.",
    loader=load_gsm8k_retrieval,
)


@cache
def _corpus(data_dir: str, train_solutions: int | None) -> dict[str, str]:
    """The first ``train_solutions`` train solutions (all for None), then the test ones; one
    object per setting, shared by both splits."""
    train = [row["solution"] for row in gsm8k_rows("train", data_dir)]
    if train_solutions is None:
        train_solutions = len(train)
    if not 0 <= train_solutions <= len(train):
        raise ValueError(
            f"train_solutions: must be between 0 and {len(train)}, got {train_solutions}"
        )
    corpus = {f"train-{index}": text for index, text in enumerate(train[:train_solutions])}
    for index, row in enumerate(gsm8k_rows("test", data_dir)):
        corpus[f"test-{index}"] = row["solution"]
    return corpus


@cache
def _test_questions(data_dir: str) -> tuple[list[str], list[str]]:
    """(test questions, their plans) for a folder; read once per process."""
    questions = [row["question"] for row in gsm8k_rows("test", data_dir)]
    socratic = list(read_jsonl(Path(data_dir) / "test_socratic.jsonl"))
    if len(socratic) != len(questions):
        raise ValueError(
            f"{data_dir}: test_socratic.jsonl has {len(socratic)} rows, test.jsonl {len(questions)}"
        )
    plans = []
    for (where, row), question in zip(socratic, questions, strict=True):
        if row.get("question") != question:
            raise ValueError(f"{where}: question differs from test.jsonl's row at the same index")
        plans.append(socratic_plan(row.get("answer", ""), where))
    return questions, plans
