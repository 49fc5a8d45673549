"""A tiny BEIR-layout retrieval folder: coloured animals, learnable in a few steps."""

from __future__ import annotations

import itertools
import json

import pytest

COLORS = ["red", "blue", "green", "black", "white", "brown"]
ANIMALS = ["cat", "dog", "fox", "owl", "cow", "bee"]
HELD_OUT = 8  # the last combinations are the test queries


def write_beir_folder(folder, with_reasoning=lambda index: index % 2 == 0):
    pairs = list(itertools.product(COLORS, ANIMALS))
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": f"d{i}", "title": "", "text": f"The {animal} here is {color} all over."}
        for i, (color, animal) in enumerate(pairs)
    ]
    queries = []
    for i, (color, animal) in enumerate(pairs):
        query = {"_id": f"q{i}", "text": f"Which {color} {animal} is it?"}
        if with_reasoning(i):
            query["reasoning"] = f"Look for the {animal}.\n\nCheck that it is {color}."
        queries.append(query)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    split_at = len(pairs) - HELD_OUT
    for split, indices in (("train", range(split_at)), ("test", range(split_at, len(pairs)))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in indices]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def animals_dir(tmp_path_factory):
    return write_beir_folder(tmp_path_factory.mktemp("animals"))
