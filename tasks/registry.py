r"""The task registry: every task by name (text, image QA and retrieval alike, told apart
by ``task.kind``), user tasks by name or by file.

>>> [(task.name, task.kind) for task in list_tasks()][2:5]
[('math500', 'text'), ('shapes_vqa', 'vqa'), ('image_qa', 'vqa')]
>>> get_task("math500").answer_format
'boxed'
>>> get_task("shapes_vqa")
Traceback (most recent call last):
ValueError: task 'shapes_vqa' is a vqa task, where a text task is needed
>>> get_task("gsm8k_retrieval", kind="retrieval").splits
('train', 'test')

Adding a task needs no change to the package: pass the path of a ``.py`` file that
defines a module-level ``TASK`` (or calls :func:`register_task` once), or of a ``.yaml``
file describing a JSONL- or Hub-backed task (see ``configs/tasks/gsm8k_socratic.yaml``)::

    name: capitals                    # required
    description: Capital cities.
    data_files: {train: train.jsonl, test: test.jsonl}   # relative to this file; ~ and $VARS expand
    # or instead of data_files: hub_id: owner/dataset, hub_config: main, splits: [train, test]
    question_column: question         # default "question"
    answer_column: answer             # default "answer"; null: gold from the solution's end
    solution_column: null             # optional worked solutions
    answer_format: boxed              # hash ("#### N", numbers) or boxed (\boxed{...})
    strip_calculator_marks: false     # drop GSM8K-style <<a=b>> marks from solutions
    prompt_template: "Question: {question}\nAnswer:"
    chat_instruction: "Put the final answer in \\boxed{}."   # for chat models; default by answer_format

A loaded file's task is registered under its name, so later lookups by name find it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml

from . import arith, gsm8k, gsm8k_retrieval, math500, retrieval, shapes_vqa, vqa
from .base import Task
from .retrieval import RetrievalTask
from .sources import TableSource
from .vqa import VQATask

AnyTask = Task | VQATask | RetrievalTask
TaskKind = Literal["text", "vqa", "retrieval"]
BUILTIN_TASKS: tuple[AnyTask, ...] = (
    arith.TASK,
    gsm8k.TASK,
    math500.TASK,
    shapes_vqa.TASK,
    vqa.IMAGE_QA,
    gsm8k_retrieval.TASK,
    retrieval.BRIGHT,
)
TASK_FILE_SUFFIXES = (".py", ".yaml", ".yml")

_TASKS: dict[str, AnyTask] = {task.name: task for task in BUILTIN_TASKS}
_REGISTERED: list[AnyTask] = []  # every register_task call in order: which tasks a .py file added


def register_task(task: AnyTask) -> AnyTask:
    """Add ``task`` under its name (replacing an earlier user task of that name); returns it."""
    if not isinstance(task, AnyTask):
        raise TypeError(
            "register_task expects a latentrl.tasks Task, VQATask or RetrievalTask, "
            f"got {type(task).__name__}"
        )
    builtin = next((t for t in BUILTIN_TASKS if t.name == task.name), None)
    if builtin is not None and builtin is not task:
        raise ValueError(f"{task.name!r} is a built-in task; give yours another name")
    _TASKS[task.name] = task
    _REGISTERED.append(task)
    return task


def list_tasks() -> list[AnyTask]:
    """Registered tasks: the built-ins first, then user tasks in registration order."""
    return list(_TASKS.values())


def get_task(name_or_path: str | os.PathLike[str], kind: TaskKind | None = "text") -> AnyTask:
    """The task registered under a name, or the task defined by a ``.py``/``.yaml`` file.

    ``kind`` is the kind the caller works with (``None``: any); a task of another kind is
    refused with an error naming both.
    """
    text = os.fspath(name_or_path)
    if text.endswith(TASK_FILE_SUFFIXES) or "/" in text or os.sep in text:
        task = load_task_file(text)
    elif text in _TASKS:
        task = _TASKS[text]
    else:
        raise ValueError(
            f"unknown task {text!r}; known tasks: {', '.join(_TASKS)} "
            "(or pass the path of a .py or .yaml task file)"
        )
    if kind is not None and task.kind != kind:
        raise ValueError(f"task {task.name!r} is a {task.kind} task, where a {kind} task is needed")
    return task


def load_task_file(path: str | os.PathLike[str]) -> AnyTask:
    """Load a task from a ``.py`` or ``.yaml`` file and register it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file not found: {path}")
    if path.suffix == ".py":
        task = _load_python(path)
    elif path.suffix in (".yaml", ".yml"):
        task = _load_yaml(path)
    else:
        raise ValueError(f"{path}: a task file must end in one of {', '.join(TASK_FILE_SUFFIXES)}")
    return register_task(task)


def _load_python(path: Path) -> AnyTask:
    # One module name per file path, so that two task files named alike do not collide.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"latentrl_task_file_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickle look modules up there
    first = len(_REGISTERED)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    added = _REGISTERED[first:]
    task = getattr(module, "TASK", None)
    if task is None and len(added) == 1:
        task = added[0]
    if not isinstance(task, AnyTask):
        raise ValueError(
            f"{path}: define a module-level TASK = latentrl.tasks.Task(...) or call "
            f"register_task exactly once (found TASK={task!r}, {len(added)} registered)"
        )
    return task


# YAML keys: the Task's fields plus the TableSource's, with the source's hub_splits
# spelled "splits" (for data_files the splits are the mapping's keys).
_TASK_KEYS = {f.name for f in fields(Task)} - {"source", "splits"}
_SOURCE_KEYS = {f.name for f in fields(TableSource)} - {"hub_splits"} | {"splits"}


def _load_yaml(path: Path) -> Task:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping of task fields, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _TASK_KEYS - _SOURCE_KEYS)
    if unknown:
        known = ", ".join(sorted(_TASK_KEYS | _SOURCE_KEYS))
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {known}")
    if "name" not in spec:
        raise ValueError(f"{path}: name: required")
    source_args: dict[str, Any] = {k: v for k, v in spec.items() if k in _SOURCE_KEYS}
    if "splits" in source_args:
        if "data_files" in source_args:
            raise ValueError(f"{path}: splits: only with hub_id (data_files' keys are the splits)")
        source_args["hub_splits"] = source_args.pop("splits")
    try:
        if isinstance(source_args.get("data_files"), dict):
            source_args["data_files"] = {
                split: _resolve(path.parent, file)
                for split, file in source_args["data_files"].items()
            }
        source = TableSource(**source_args)
        return Task(
            source=source,
            splits=source.splits,
            **{k: v for k, v in spec.items() if k in _TASK_KEYS},
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def _resolve(folder: Path, file: Any) -> Path:
    if not isinstance(file, str):
        raise ValueError(f"data_files: expected file names, got {file!r}")
    return folder / os.path.expandvars(os.path.expanduser(file))
