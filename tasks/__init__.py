"""Tasks: data, prompts, gold answers, default rewards and metrics (``latentrl.tasks``).

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

Built-in tasks: ``arith`` (synthetic), ``gsm8k`` and ``math500`` (Hub or local files).
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
from .registry import get_task, list_tasks, load_task_file, register_task
from .sources import TableSource

__all__ = [
    "COLUMNS",
    "DEFAULT_PROMPT_TEMPLATE",
    "AnswerFormat",
    "TableSource",
    "Task",
    "canonical_answer",
    "extract_final_answer",
    "format_final_answer",
    "get_task",
    "list_tasks",
    "load_task_file",
    "register_task",
]
