"""Finding tasks: built-in names, user tasks from .py and .yaml files, clear errors."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import datasets
import pytest

from latentrl.tasks import get_task, list_tasks, register_task

REPO_ROOT = Path(__file__).resolve().parents[2]

PY_TASK = """
from latentrl.tasks import Task

def rows(split, count=2):
    for i in range(count):
        yield {"question": f"What is {i} + 1?", "solution": f"{i} + 1 = {i + 1}", "answer": i + 1}

TASK = Task(name="counting", description="count up", source=rows, splits=("test",))
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_capitals(folder: Path) -> None:
    rows = [
        {"q": "Capital of France?", "a": "Paris", "region": "Europe"},
        {"q": "Capital of Peru?", "a": "Lima", "region": "Americas"},
    ]
    for split in ("train", "test"):
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{split}.jsonl").write_text(text, encoding="utf-8")


YAML_TASK = """
name: capitals
description: Capital cities.
data_files: {train: data/train.jsonl, test: data/test.jsonl}
question_column: q
answer_column: a
answer_format: boxed
prompt_template: "Country question: {question}\\nCity:"
"""


def test_builtin_names_and_kinds() -> None:
    assert [(task.name, task.kind) for task in list_tasks()] == [
        ("arith", "text"),
        ("gsm8k", "text"),
        ("math500", "text"),
        ("shapes_vqa", "vqa"),
        ("image_qa", "vqa"),
        ("gsm8k_retrieval", "retrieval"),
        ("bright", "retrieval"),
    ]
    assert all(task.description for task in list_tasks())
    assert len({*list_tasks()}) == 7  # hashable, e.g. as cache keys


def test_a_task_of_another_kind_is_refused_naming_both() -> None:
    assert get_task("shapes_vqa", kind="vqa").name == "shapes_vqa"
    assert get_task("bright", kind=None).kind == "retrieval"
    with pytest.raises(ValueError, match="^task 'bright' is a retrieval task, where a text task"):
        get_task("bright")  # text is the default: the DLR and GRPO recipes' kind


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as error:
        get_task("gsm9k")
    assert str(error.value) == (
        "unknown task 'gsm9k'; known tasks: arith, gsm8k, math500, shapes_vqa, image_qa, "
        "gsm8k_retrieval, bright "
        "(or pass the path of a .py or .yaml task file)"
    )


def test_python_file_with_a_task_object(tmp_path: Path) -> None:
    path = write(tmp_path / "counting.py", PY_TASK)
    task = get_task(str(path))
    assert task.name == "counting" and get_task("counting") is task
    assert [t.name for t in list_tasks()][-1] == "counting"
    ds = task.load("test", count=3)
    assert ds["answer"] == ["1", "2", "3"]
    assert ds[2]["solution"] == "2 + 1 = 3\n#### 3"


def test_python_file_that_calls_register_task(tmp_path: Path) -> None:
    text = """
    from latentrl.tasks import Task, register_task

    def rows(split):
        yield {"question": "What is 1 + 1?", "answer": 2}

    register_task(Task(name="counting", source=rows, splits=("test",)))
    """
    task = get_task(write(tmp_path / "registered.py", text))
    assert task.name == "counting" and get_task("counting") is task


def test_python_file_without_a_task(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.py", "X = 1\n")
    with pytest.raises(ValueError, match="define a module-level TASK"):
        get_task(str(path))


def test_yaml_file_with_local_jsonl(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_capitals(tmp_path / "data")
    task = get_task(str(write(tmp_path / "capitals.yaml", YAML_TASK)))
    assert (task.name, task.kind, task.splits) == ("capitals", "text", ("train", "test"))
    assert task.answer_format == "boxed"
    assert get_task("capitals") is task
    ds = task.load("test")
    assert ds.column_names == ["question", "prompt", "solution", "answer", "region"]
    assert ds[0] == {
        "question": "Capital of France?",
        "prompt": "Country question: Capital of France?\nCity:",
        "solution": "\\boxed{Paris}",
        "answer": "Paris",
        "region": "Europe",
    }


def test_yaml_file_with_a_hub_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path: str, name: str | None = None, **kwargs: Any) -> datasets.Dataset:
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_list([{"problem": "1+1?", "worked": "1 + 1 = 2\n#### 2"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    text = """
    name: hubsums
    hub_id: someone/sums
    hub_config: easy
    splits: [validation]
    question_column: problem
    answer_column: null
    solution_column: worked
    """
    task = get_task(write(tmp_path / "hubsums.yml", text))
    assert task.splits == ("validation",)
    row = task.load("validation")[0]
    assert calls == [("someone/sums", "easy", {"split": "validation"})]
    assert (row["solution"], row["answer"]) == ("1 + 1 = 2\n#### 2", "2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (YAML_TASK + "answer_colum: a\n", "unknown key\\(s\\) answer_colum; known keys: "),
        (YAML_TASK.replace("name: capitals", ""), "name: required"),
        (YAML_TASK + "hub_id: a/b\n", "give exactly one of data_files and hub_id"),
        (YAML_TASK + "splits: [train]\n", "splits: only with hub_id"),
        (YAML_TASK.replace("{question}", "{q}"), "prompt_template: must contain"),
        (YAML_TASK.replace("boxed", "latex"), "answer_format: expected one of"),
        (YAML_TASK + "metric: accuracy\n", "unknown key\\(s\\) metric; known keys: "),
        (YAML_TASK.replace("answer_column: a", "answer_column: null"), "give answer_column"),
        ("- just\n- a list\n", "expected a mapping of task fields"),
        ("name: [unclosed\n", "invalid YAML"),
    ],
)
def test_yaml_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "broken.yaml", text)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{message}"):
        get_task(str(path))


def test_yaml_data_file_errors_name_the_file(tmp_path: Path) -> None:
    task = get_task(str(write(tmp_path / "capitals.yaml", YAML_TASK)))  # no data/ folder yet
    with pytest.raises(
        ValueError, match=re.escape(f"data file not found: {tmp_path}/data/test.jsonl")
    ):
        task.load("test")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text('{"q": "Capital of Chad?"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"test.jsonl line 1: column 'a': missing"):
        task.load("test")


def test_missing_file_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task file not found: .*nowhere.yaml"):
        get_task(str(tmp_path / "nowhere.yaml"))
    path = write(tmp_path / "task.txt", "name: x\n")
    with pytest.raises(ValueError, match="a task file must end in one of .py, .yaml, .yml"):
        get_task(str(path))


def test_builtin_names_are_protected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'gsm8k' is a built-in task"):
        get_task(str(write(tmp_path / "mine.yaml", YAML_TASK.replace("capitals", "gsm8k"))))
    register_task(get_task("gsm8k"))  # re-registering the built-in itself is harmless
    with pytest.raises(TypeError, match="expects a latentrl.tasks Task, VQATask or Retrieval"):
        register_task("arith")  # type: ignore[arg-type]


def test_user_task_can_be_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "counting.py", PY_TASK)
    get_task(str(path))
    write(path, PY_TASK.replace("count up", "count up again"))
    assert get_task(str(path)).description == "count up again"
    assert get_task("counting").description == "count up again"


def test_example_config_gsm8k_socratic(gsm8k_dir: Path) -> None:
    config = REPO_ROOT / "configs" / "tasks" / "gsm8k_socratic.yaml"
    data = REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "test_socratic.jsonl"
    if not data.is_file():
        pytest.skip(f"the example config reads {data}, which is absent")
    socratic = get_task(str(config)).load("test")
    plain = get_task("gsm8k").load("test", data_dir=gsm8k_dir)
    assert len(socratic) == 1319 and socratic["answer"] == plain["answer"]
    assert " ** " in socratic[0]["solution"] and "<<" not in socratic[0]["solution"]
