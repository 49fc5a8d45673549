"""shapes_vqa scenes and questions, the generic image-QA loader and its error messages."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from latentrl.data.vqa import encode_rows, majority_answers, majority_table
from latentrl.tasks import get_task
from latentrl.tasks.shapes_vqa import COLOURS, SHAPES
from latentrl.tasks.vqa import answers_match, normalize_answer


def _pixels(image):
    return torch.tensor(np.asarray(image))


def test_shapes_vqa_is_deterministic_by_seed_and_balanced_by_level():
    task = get_task("shapes_vqa", kind="vqa")
    first = task.load("train", limit=30, seed=3)
    again = task.load("train", limit=30, seed=3)
    other = task.load("train", limit=30, seed=4)
    assert [r["question"] for r in first] == [r["question"] for r in again]
    assert all(
        torch.equal(_pixels(a["image"]), _pixels(b["image"]))
        for a, b in zip(first, again, strict=True)
    )
    assert [r["question"] for r in first] != [r["question"] for r in other]
    assert [r["level"] for r in first[:6]] == [1, 2, 3, 1, 2, 3]
    assert [r["level"] for r in task.load("test", limit=4, levels=[2])] == [2, 2, 2, 2]
    # A longer split extends the same list.
    assert [r["question"] for r in task.load("train", limit=40, seed=3)[:30]] == [
        r["question"] for r in first
    ]


def _scene(row):
    return [
        (i // 4, i % 4, SHAPES[s - 1], list(COLOURS)[c - 1])
        for i, (s, c) in enumerate(zip(row["patch_shapes"], row["patch_colours"], strict=True))
        if s
    ]


def test_shapes_vqa_answers_agree_with_the_scene():
    """Re-derive every answer from the scene's cells, independently of the generator."""
    checked = 0
    for row in get_task("shapes_vqa", kind="vqa").load("test", limit=300):
        scene, q, answer = _scene(row), row["question"], row["answer"]
        assert 2 <= len(scene) <= 5
        words = q.rstrip("?").split()
        if q.startswith("is there a"):
            assert answer == (
                "yes" if (words[4], words[3]) in {(s, c) for _, _, s, c in scene} else "no"
            )
        elif q.startswith("what colour is the"):
            assert [c for _, _, s, c in scene if s == words[4]] == [answer]
        elif q.startswith("how many shapes are there"):
            assert answer == str(len(scene))
        elif q.startswith("how many") and q.endswith("shapes are there?"):
            assert answer == str(sum(c == words[2] for _, _, _, c in scene))
        elif " of the " in q or " above the " in q or " below the " in q:
            colour, shape = words[-2], words[-1]
            (ref,) = [o for o in scene if o[2] == shape and o[3] == colour]
            # (axis, sign): "left of" means a smaller column, "above" a smaller row.
            axes = {"left": (1, -1), "right": (1, 1), "above": (0, -1), "below": (0, 1)}
            axis, sign = next(v for k, v in axes.items() if f" {k} " in q)
            others = [o for o in scene if o != ref and sign * (o[axis] - ref[axis]) > 0]
            if words[2] != "shapes":  # "how many <colour> shapes are ..."
                others = [o for o in others if o[3] == words[2]]
            assert answer == str(len(others))
        else:
            continue
        checked += 1
    assert checked > 200


def test_shapes_vqa_relation_answers_are_balanced():
    """No level-3 answer dominates, so the majority answer cannot pass for reasoning."""
    rows = get_task("shapes_vqa", kind="vqa").load("test", limit=400, levels=[3])
    counts = Counter(r["answer"] for r in rows)
    assert set(counts) == {"0", "1", "2", "3"}
    assert max(counts.values()) / len(rows) < 0.32, counts
    # Small scenes cap the count a relation can reach, and every row still gets generated.
    few = get_task("shapes_vqa", kind="vqa").load("test", limit=40, levels=[3], max_shapes=2)
    assert {r["answer"] for r in few} == {"0", "1"}


def test_scenes_draw_each_shape_in_its_cell():
    row = get_task("shapes_vqa", kind="vqa").load("test", limit=1)[0]
    image = row["image"]
    for cell, shape in enumerate(row["patch_shapes"]):
        top, left = (cell // 4) * 8, (cell % 4) * 8
        centre = image.getpixel((left + 4, top + 5))
        if shape:
            assert centre == COLOURS[list(COLOURS)[row["patch_colours"][cell] - 1]]
        else:
            assert centre == (20, 20, 20)


def test_shapes_vqa_rejects_unknown_levels():
    with pytest.raises(ValueError, match="levels must be a non-empty list of 1, 2, 3"):
        get_task("shapes_vqa", kind="vqa").load("train", limit=1, levels=[4])
    with pytest.raises(ValueError, match="task 'shapes_vqa': bad load options: .*'colours'"):
        get_task("shapes_vqa", kind="vqa").load("train", limit=1, colours=3)


def test_answers_match_after_normalisation():
    assert normalize_answer("  Yes. ") == "yes"
    assert answers_match(" red\nQuestion: ...", "Red")
    assert not answers_match(" 3", "2")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_image_qa_loads_local_files_with_configured_columns(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buffer, format="PNG")
    _write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"img": "red.png", "q": "What colour?", "choices": ["red", "blue"], "a": 0},
            {"img": "red.png", "q": "Is it red?", "choices": ["yes", "no"], "a": "Yes"},
        ],
    )
    options = {
        "data_files": {"test": str(tmp_path / "test.jsonl")}, "image_column": "img",
        "question_column": "q", "answer_column": "a", "choices_column": "choices",
    }  # fmt: skip
    rows = get_task("image_qa", kind="vqa").load("test", **options)
    assert [r["answer"] for r in rows] == ["red", "yes"]
    assert rows[0]["question"] == "What colour? Options: red, blue."
    assert rows[0]["prompt"] == "Question: What colour? Options: red, blue.\nAnswer:"
    assert rows[0]["image"].mode == "RGB" and rows[0]["image"].size == (8, 8)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"image": "missing.png", "question": "q?", "answer": "a"},
            r"test.jsonl line 1: column 'image': cannot decode the image",
        ),
        (
            {"image": "bad.png", "question": "q?", "answer": "a"},
            r"test.jsonl line 1: column 'image': cannot decode the image",
        ),
        ({"image": "bad.png", "question": "q?"}, r"test.jsonl line 1: column 'answer': missing"),
        ({"question": "q?", "answer": "a"}, r"test.jsonl line 1: column 'image': missing"),
    ],
)
def test_image_qa_errors_name_the_row_and_column(tmp_path, record, message):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    _write_jsonl(tmp_path / "test.jsonl", [record])
    with pytest.raises(ValueError, match=message):
        get_task("image_qa", kind="vqa").load(
            "test", data_files={"test": str(tmp_path / "test.jsonl")}
        )


def test_a_question_longer_than_the_context_is_an_error_naming_the_row(tiny_vqa_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vqa_models["language_model"])
    rows = get_task("shapes_vqa", kind="vqa").load("test", limit=2)
    rows[1] = rows[1] | {"prompt": "Question: " + "how many " * 80 + "?\nAnswer:"}
    assert len(encode_rows(tokenizer, rows[:1], "Answer:", 8, 128)) == 1
    with pytest.raises(
        ValueError, match=r"task 'shapes_vqa' test\[1\]: the question is too long: \d+ positions"
    ):
        encode_rows(tokenizer, rows, "Answer:", 8, 128)


def test_majority_baseline_per_level():
    train = [
        {"answer": a, "level": lv}
        for a, lv in [("yes", 1), ("yes", 1), ("no", 1), ("2", 2), ("1", 2), ("1", 2)]
    ]
    majority = majority_answers(train)
    assert majority[1] == "yes" and majority[2] == "1"
    test = [
        {"answer": "yes", "level": 1},
        {"answer": "no", "level": 1},
        {"answer": "1", "level": 2},
    ]
    table = majority_table(test, majority)
    assert table == {
        "majority_accuracy": 2 / 3,
        "majority_accuracy_level_1": 0.5,
        "majority_accuracy_level_2": 1.0,
    }
