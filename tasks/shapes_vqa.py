"""shapes_vqa: synthetic scenes of coloured shapes on a grid, with questions in three levels.

A scene is a ``size x size`` RGB image drawn with Pillow: a ``grid x grid`` layout of
cells, 2-5 of them holding a shape (circle, square or triangle) in one of four colours.
Questions, one per scene:

- level 1, attributes and existence: "what colour is the square?", "what shape is the
  red object?", "is there a red circle?";
- level 2, counting: "how many blue shapes are there?", "how many circles are there?";
- level 3, relations (a count relative to a uniquely named shape): "how many shapes are
  left of the red circle?" (also right of, above and below; a quarter of them two-step,
  "how many blue shapes are left of the red circle?"). Answers are balanced: each row
  first draws its answer uniformly from 0-3, then scenes and questions are drawn until
  one has that answer (left to chance, 54% of them would answer 0, so answering "0"
  every time would score as well as reading the scene).

Choices, and why (a model trained for minutes on one CPU core must visibly learn):

- small images (32 x 32) and a grid whose cell is one vision patch (8 x 8), so each
  visual token sees at most one whole object, and per-patch attribute labels
  (:func:`patch_labels`) let a tiny vision encoder be pre-trained in seconds;
- questions are only asked when their answer is well defined (the named object is unique);
  yes/no questions and level-3 answers are balanced;
- rows come from ``random.Random(f"shapes_vqa/{seed}/{split}")``, so a split is the same
  list on every platform and a larger ``num_examples`` extends it; the level of row i is
  ``levels[i % len(levels)]`` (levels are balanced).

Rows also carry the per-patch labels (``patch_shapes``, ``patch_colours``) and a worked
``thought`` in words: the objects the answer is read from, then the answer
(``"blue square 0 1. blue circle 2 2. so 2"``), what a language model can be taught to
read in its latent slot, as DLR's main model reads worked steps.

Load options: ``levels=(1, 2, 3)``, ``num_examples`` (train 20,000, test 600),
``seed=0``, ``grid=4``, ``cell=8``, ``min_shapes=2``, ``max_shapes=5``.

>>> row = TASK.load("test", limit=1, levels=[2])[0]
>>> row["question"], row["answer"], row["level"], row["image"].size
('how many blue shapes are there?', '2', 2, (32, 32))
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from PIL import Image, ImageDraw

from .vqa import VQATask

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 240),
    "yellow": (235, 215, 40),
}
BACKGROUND = (20, 20, 20)
DEFAULT_SIZES = {"train": 20000, "test": 600}
VERSION = 2
"""Bumped whenever the rows for the same options change (2: balanced level-3 answers), so
models pre-trained on them and cached (:mod:`latentrl.models.vision`) are rebuilt."""
RELATION_ANSWERS = ("0", "1", "2", "3")
"""Level-3 answers, drawn uniformly (4 shapes on one side of the named one is rare)."""
RELATIONS = {
    "left of": lambda obj, ref: obj.col < ref.col,
    "right of": lambda obj, ref: obj.col > ref.col,
    "above": lambda obj, ref: obj.row < ref.row,
    "below": lambda obj, ref: obj.row > ref.row,
}


class Shape(NamedTuple):
    row: int
    col: int
    shape: str
    colour: str


def random_scene(rng: random.Random, grid: int, min_shapes: int, max_shapes: int) -> list[Shape]:
    cells = rng.sample(range(grid * grid), rng.randint(min_shapes, max_shapes))
    return [
        Shape(cell // grid, cell % grid, rng.choice(SHAPES), rng.choice(list(COLOURS)))
        for cell in sorted(cells)
    ]


def draw_scene(scene: Sequence[Shape], grid: int, cell: int) -> Image.Image:
    image = Image.new("RGB", (grid * cell, grid * cell), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene:
        left, top = obj.col * cell + 1, obj.row * cell + 1
        right, bottom = left + cell - 3, top + cell - 3
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        else:
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    return image


def patch_labels(scene: Sequence[Shape], grid: int) -> tuple[list[int], list[int]]:
    """Per cell (row-major): shape index + 1 and colour index + 1, 0 where the cell is empty."""
    shapes, colours = [0] * (grid * grid), [0] * (grid * grid)
    for obj in scene:
        shapes[obj.row * grid + obj.col] = SHAPES.index(obj.shape) + 1
        colours[obj.row * grid + obj.col] = list(COLOURS).index(obj.colour) + 1
    return shapes, colours


def describe_scene(scene: Sequence[Shape]) -> str:
    """Objects in words, row by row: ``"red circle 0 1. blue square 2 3."`` (row, column)."""
    return " ".join(f"{o.colour} {o.shape} {o.row} {o.col}." for o in scene) or "none."


QA = tuple[str, str, list[Shape]]
"""A question, its answer, and the objects the answer is read from (its worked thought)."""


def _unique(scene: Sequence[Shape], **attrs: str) -> Shape | None:
    found = [o for o in scene if all(getattr(o, k) == v for k, v in attrs.items())]
    return found[0] if len(found) == 1 else None


def _plural(shape: str) -> str:
    return f"{shape}s"


def level1(scene: Sequence[Shape], rng: random.Random) -> QA | None:
    kind = rng.choice(("colour", "shape", "exists"))
    if kind == "colour":
        shape = rng.choice(SHAPES)
        obj = _unique(scene, shape=shape)
        return (f"what colour is the {shape}?", obj.colour, [obj]) if obj else None
    if kind == "shape":
        colour = rng.choice(list(COLOURS))
        obj = _unique(scene, colour=colour)
        return (f"what shape is the {colour} object?", obj.shape, [obj]) if obj else None
    present = {(o.colour, o.shape) for o in scene}
    if rng.random() < 0.5:
        colour, shape = rng.choice(sorted(present))
    else:
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        colour, shape = rng.choice(absent)
    answer = "yes" if (colour, shape) in present else "no"
    matches = [o for o in scene if (o.colour, o.shape) == (colour, shape)]
    return f"is there a {colour} {shape}?", answer, matches


def _count(question: str, counted: list[Shape]) -> QA:
    return question, str(len(counted)), counted


def level2(scene: Sequence[Shape], rng: random.Random) -> QA | None:
    kind = rng.choice(("colour", "shape", "all"))
    if kind == "colour":
        colour = rng.choice(list(COLOURS))
        return _count(
            f"how many {colour} shapes are there?", [o for o in scene if o.colour == colour]
        )
    if kind == "shape":
        shape = rng.choice(SHAPES)
        return _count(
            f"how many {_plural(shape)} are there?", [o for o in scene if o.shape == shape]
        )
    return _count("how many shapes are there?", list(scene))


def level3(scene: Sequence[Shape], rng: random.Random) -> QA | None:
    ref = rng.choice(scene)
    if _unique(scene, colour=ref.colour, shape=ref.shape) is None:
        return None
    relation = rng.choice(list(RELATIONS))
    others = [o for o in scene if o is not ref and RELATIONS[relation](o, ref)]
    name = f"the {ref.colour} {ref.shape}"
    if rng.random() < 0.25:  # two steps: a relation, then a colour filter
        colour = rng.choice(list(COLOURS))
        question = f"how many {colour} shapes are {relation} {name}?"
        return _count(question, [o for o in others if o.colour == colour])
    return _count(f"how many shapes are {relation} {name}?", others)


LEVELS = {1: level1, 2: level2, 3: level3}


def shapes_vqa_source(
    split: str,
    levels: Sequence[int] = (1, 2, 3),
    num_examples: int | None = None,
    seed: int = 0,
    grid: int = 4,
    cell: int = 8,
    min_shapes: int = 2,
    max_shapes: int = 5,
) -> Iterator[dict[str, Any]]:
    levels = list(levels)
    if not levels or any(level not in LEVELS for level in levels):
        raise ValueError(f"shapes_vqa: levels must be a non-empty list of 1, 2, 3; got {levels}")
    if not 1 <= min_shapes <= max_shapes <= grid * grid:
        raise ValueError(
            f"shapes_vqa: need 1 <= min_shapes <= max_shapes <= grid^2 = {grid * grid}"
        )
    # The counts a relation can reach: the shapes other than the named one, all in the
    # columns (or rows) on one side of it.
    relation_answers = RELATION_ANSWERS[: min(max_shapes, grid * (grid - 1) + 1)]
    rng = random.Random(f"shapes_vqa/{seed}/{split}")
    for index in range(num_examples or DEFAULT_SIZES[split]):
        level = levels[index % len(levels)]
        wanted = rng.choice(relation_answers) if level == 3 else None
        while True:
            scene = random_scene(rng, grid, min_shapes, max_shapes)
            qa = LEVELS[level](scene, rng)
            if qa is not None and wanted in (None, qa[1]):
                break
        shapes, colours = patch_labels(scene, grid)
        yield {
            "image": draw_scene(scene, grid, cell),
            "question": qa[0],
            "answer": qa[1],
            "level": level,
            "patch_shapes": shapes,
            "patch_colours": colours,
            "thought": f"{describe_scene(qa[2])} so {qa[1]}",
        }


TASK = VQATask(
    name="shapes_vqa",
    description="synthetic coloured-shape scenes; level 1 attributes, 2 counting, 3 relations",
    source=shapes_vqa_source,
    version=VERSION,
)
