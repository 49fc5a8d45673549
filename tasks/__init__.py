"""Tasks of every kind (text, image QA, retrieval): data, prompts, gold answers.

>>> task = get_task("arith")
>>> row = task.load("train", limit=1, steps=1, max_value=9)[0]
>>> list(row)
['question', 'prompt', 'solution', 'answer', 'thought']
>>> print(row["prompt"] + task.target(row))  # a supervised training text
Question: Eva has 5 stamps. She finds 1 more. How many stamps does Eva have now?
Answer: 5 + 1 = 6
#### 6
>>> row["answer"]
'6'

Built-in tasks, by kind (``latentrl tasks`` lists them): text tasks ``arith`` (synthetic),
``gsm8k`` and ``math500`` (Hub or local files); image QA (:class:`VQATask`) ``shapes_vqa``
and ``image_qa``; retrieval (:class:`RetrievalTask`) ``gsm8k_retrieval`` and ``bright``.
User tasks: ``get_task("path/to/task.py")`` or ``get_task("path/to/task.yaml")``; see
:mod:`latentrl.tasks.registry`.
"""

# This folder is installed as latentrl.tasks (pyproject's package-dir). Imported as a
# top-level `tasks` (from the repository root) it would be a second copy of every module,
# whose classes fail isinstance checks against latentrl.tasks's.
if __name__ != "latentrl.tasks":
    raise ImportError(f"import latentrl.tasks, not {__name__}: tasks/ is latentrl.tasks's source")

from .base import (
    COLUMNS,
    DEFAULT_PROMPT_TEMPLATE,
    AnswerFormat,
    Task,
    canonical_answer,
    extract_final_answer,
    format_final_answer,
)
from .registry import AnyTask, TaskKind, get_task, list_tasks, load_task_file, register_task
from .retrieval import RetrievalData, RetrievalTask
from .sources import TableSource
from .vqa import VQATask

__all__ = [
    "COLUMNS",
    "DEFAULT_PROMPT_TEMPLATE",
    "AnswerFormat",
    "AnyTask",
    "RetrievalData",
    "RetrievalTask",
    "TableSource",
    "Task",
    "TaskKind",
    "VQATask",
    "canonical_answer",
    "extract_final_answer",
    "format_final_answer",
    "get_task",
    "list_tasks",
    "load_task_file",
    "register_task",
]
