"""A tiny BEIR-layout retrieval folder: where 36 animals sleep, learnable in a few steps."""

from __future__ import annotations

import json

import pytest

ANIMALS = [
    "cat",
    "dog",
    "fox",
    "owl",
    "cow",
    "bee",
    "ant",
    "elk",
    "yak",
    "emu",
    "hen",
    "pig",
    "ram",
    "rat",
    "bat",
    "eel",
    "gnu",
    "koi",
    "cod",
    "asp",
    "doe",
    "ewe",
    "jay",
    "kid",
    "lamb",
    "mole",
    "newt",
    "orca",
    "puma",
    "seal",
    "toad",
    "vole",
    "wasp",
    "wolf",
    "wren",
    "zebu",
]
PLACES = ["barn", "den", "nest", "cave", "pond", "tree"]
NUM_TRAIN = 28  # the last 8 animals are the held-out test queries


def write_beir_folder(folder):
    """Query i asks where animal i sleeps; document i says so. Even queries carry a
    two-segment reasoning, odd ones none (training generates theirs)."""
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": f"d{i}", "title": "", "text": f"The {animal} sleeps in the {PLACES[i % 6]}."}
        for i, animal in enumerate(ANIMALS)
    ]
    queries = []
    for i, animal in enumerate(ANIMALS):
        query = {"_id": f"q{i}", "text": f"Where does the {animal} sleep?"}
        if i % 2 == 0:
            query["reasoning"] = f"Find the {animal}.\n\nFind where it sleeps."
        queries.append(query)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    splits = {"train": range(NUM_TRAIN), "test": range(NUM_TRAIN, len(ANIMALS))}
    for split, indices in splits.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in indices]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def animals_dir(tmp_path_factory):
    return write_beir_folder(tmp_path_factory.mktemp("animals"))
