r"""Image question answering tasks: an image, a question and a short answer per row.

A :class:`VQATask` loads rows as plain dicts with

- ``image``: a ``PIL.Image`` in RGB;
- ``question`` and ``prompt`` (``task.format_prompt(question)``, what the language model reads);
- ``answer``: the gold answer, normalised by :func:`normalize_answer`;

plus any extra columns of its source (``level`` for ``shapes_vqa``). Answers are scored by
exact match after normalisation, the usual VQA accuracy for single-answer datasets.

Built in: ``shapes_vqa`` (synthetic, see :mod:`latentrl.tasks.shapes_vqa`) and ``image_qa``,
the generic loader for local JSONL files or a Hub dataset with configurable columns::

    task:
      name: image_qa
      options:
        hub_id: derek-thomas/ScienceQA      # or data_files: {train: train.jsonl, test: ...}
        image_column: image                 # PIL image, {"bytes"/"path"}, or a file path
        question_column: question
        answer_column: answer               # text, or an index into choices_column
        choices_column: choices             # optional: appended to the question as options

>>> normalize_answer(" Red. ")
'red'
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .base import DEFAULT_PROMPT_TEMPLATE
from .sources import read_hub, read_jsonl


def normalize_answer(text: str) -> str:
    """Lower case, no surrounding punctuation or whitespace, single spaces."""
    text = re.sub(r"\s+", " ", str(text).strip().lower())
    return text.strip(" .,!?;:'\"")


def answers_match(prediction: str, gold: str) -> bool:
    """Exact match after normalisation; a prediction is read up to its first line break."""
    first_line = prediction.strip().split("\n", 1)[0]
    return normalize_answer(first_line) == normalize_answer(gold)


@dataclass(frozen=True, kw_only=True)
class VQATask:
    """A named image-QA task; ``source(split, **options)`` yields rows with an image."""

    kind: ClassVar[str] = "vqa"

    name: str
    description: str
    source: Callable[..., Iterable[Mapping[str, Any]]]
    splits: tuple[str, ...] = ("train", "test")
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    version: int = 1
    """Changes when the rows of a source change for the same options (caches key on it)."""

    def format_prompt(self, question: str) -> str:
        return self.prompt_template.replace("{question}", question)

    def load(self, split: str, limit: int | None = None, **options: Any) -> list[dict[str, Any]]:
        """The first ``limit`` rows of ``split`` (all when None), checked one by one."""
        if split not in self.splits:
            raise ValueError(f"task {self.name!r}: unknown split {split!r}; splits: {self.splits}")
        try:
            source = self.source(split, **options)
        except TypeError as err:  # an unknown or missing option: say which task it was for
            raise ValueError(f"task {self.name!r}: bad load options: {err}") from None
        rows = []
        for index, row in enumerate(itertools.islice(source, limit)):
            where = row.get("where", f"task {self.name!r} {split}[{index}]")
            question, answer = row.get("question"), row.get("answer")
            if not isinstance(question, str) or not question.strip():
                raise ValueError(
                    f"{where}: question: expected a non-empty string, got {question!r}"
                )
            if answer is None or not normalize_answer(str(answer)):
                raise ValueError(f"{where}: answer: expected a non-empty answer, got {answer!r}")
            extras = {k: v for k, v in row.items() if k not in ("question", "answer", "where")}
            rows.append(
                extras
                | {
                    "question": question,
                    "prompt": self.format_prompt(question),
                    "answer": normalize_answer(str(answer)),
                    "where": where,
                }
            )
        return rows


def decode_image(value: Any, where: str, column: str, folder: Path | None = None):
    """An RGB ``PIL.Image`` from a PIL image, ``{"bytes"|"path": ...}`` or a file path."""
    from PIL import Image

    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, Mapping) and value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, Mapping | str) and (
            path := value.get("path") if isinstance(value, Mapping) else value
        ):
            image = Image.open(Path(folder or ".") / path)
        else:
            raise ValueError(f"expected an image, bytes or a file path, got {type(value).__name__}")
        return image.convert("RGB")
    except Exception as err:  # PIL raises many kinds for corrupt data; name the row
        raise ValueError(f"{where}: column {column!r}: cannot decode the image ({err})") from None


@dataclass(frozen=True, kw_only=True)
class ImageQASource:
    """Rows from JSONL files (one per split; image paths relative to the file) or a Hub dataset."""

    data_files: Mapping[str, str] | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    image_column: str = "image"
    question_column: str = "question"
    answer_column: str = "answer"
    choices_column: str | None = None
    """Optional list of options: appended to the question, and an integer answer indexes it."""

    def __post_init__(self) -> None:
        if (self.data_files is None) == (self.hub_id is None):
            raise ValueError("image_qa: give exactly one of data_files and hub_id")

    def __call__(self, split: str) -> Iterator[dict[str, Any]]:
        if self.data_files is not None:
            if split not in self.data_files:
                raise ValueError(f"image_qa: no data file for split {split!r}")
            path = Path(self.data_files[split])
            records, folder = read_jsonl(path), path.parent
        else:
            records, folder = read_hub(self.hub_id, self.hub_config, split), None
        for where, record in records:
            yield self.to_row(where, record, folder)

    def to_row(self, where: str, record: Mapping[str, Any], folder: Path | None) -> dict[str, Any]:
        columns = [self.image_column, self.question_column, self.answer_column]
        for column in [*columns, *filter(None, [self.choices_column])]:
            if record.get(column) is None:
                raise ValueError(f"{where}: column {column!r}: missing")
        question, answer = record[self.question_column], record[self.answer_column]
        if self.choices_column:
            choices = record[self.choices_column]
            if isinstance(answer, int) and not isinstance(answer, bool):
                if not 0 <= answer < len(choices):
                    raise ValueError(
                        f"{where}: column {self.answer_column!r}: index {answer} outside the "
                        f"{len(choices)} choices"
                    )
                answer = choices[answer]
            question = f"{question} Options: {', '.join(map(str, choices))}."
        image = decode_image(record[self.image_column], where, self.image_column, folder)
        return {"image": image, "question": question, "answer": answer, "where": where}


def _image_qa_source(split: str, **options: Any) -> Iterator[dict[str, Any]]:
    try:
        source = ImageQASource(**options)
    except TypeError as err:
        raise ValueError(f"image_qa: bad options: {err}") from None
    return source(split)


IMAGE_QA = VQATask(
    name="image_qa",
    description="any image-question-answer dataset: local JSONL or Hub, columns configurable",
    source=_image_qa_source,
    splits=("train", "validation", "test"),
)
