"""A tiny BEIR-layout retrieval folder: where 36 animals sleep, learnable in a few steps."""

from __future__ import annotations

import json
import random

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


# A second folder for the test of learning: 72 animals known by number, the last 24 held
# out. The number ends the query, where a causal LM's last state reads it, and starts the
# document, so an untrained encoder ranks by the place (nDCG@10 0.06-0.20 over seeds 0-6)
# and training has to learn to carry the number to the end (0.51-0.88 after 80 steps).
# The animals above leave too little to measure: 8 held-out queries, and with their names
# the tiny arith LM learnt nothing on some seeds.
NUMBERS = [str(n) for n in random.Random(0).sample(range(10, 100), 72)]
NUMBERED = {
    "query": "Where sleeps animal {name}?",
    "document": "Animal {name} sleeps in the {place}.",
    "reasoning": "Find animal {name}.\n\nFind where it sleeps.",
}


def write_beir_folder(
    folder,
    names=ANIMALS,
    num_train=NUM_TRAIN,
    query="Where does the {name} sleep?",
    document="The {name} sleeps in the {place}.",
    reasoning="Find the {name}.\n\nFind where it sleeps.",
):
    """Query i asks where ``names[i]`` sleeps; document i says so. Even queries carry a
    two-segment reasoning, odd ones none (training generates theirs). The first
    ``num_train`` queries are the training split, the others the held-out test split."""
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": f"d{i}", "title": "", "text": document.format(name=name, place=PLACES[i % 6])}
        for i, name in enumerate(names)
    ]
    queries = []
    for i, name in enumerate(names):
        row = {"_id": f"q{i}", "text": query.format(name=name)}
        if i % 2 == 0:
            row["reasoning"] = reasoning.format(name=name)
        queries.append(row)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    splits = {"train": range(num_train), "test": range(num_train, len(names))}
    for split, indices in splits.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in indices]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def animals_dir(tmp_path_factory):
    return write_beir_folder(tmp_path_factory.mktemp("animals"))


@pytest.fixture(scope="session")
def numbered_animals_dir(tmp_path_factory):
    return write_beir_folder(
        tmp_path_factory.mktemp("numbered-animals"), NUMBERS, num_train=48, **NUMBERED
    )
