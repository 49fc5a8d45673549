r"""Retrieval tasks: queries, a corpus, relevance judgements and optional reasoning.

A retrieval task's ``load(split, **options)`` returns a :class:`RetrievalData`; every
split shares the task's whole corpus, and splits never share a query. Built in:

- ``gsm8k_retrieval`` (:mod:`latentrl.tasks.gsm8k_retrieval`): GSM8K test questions
  against every GSM8K worked solution;
- ``bright``: BRIGHT-style data, from the Hub (``xlangai/BRIGHT``, one domain) or from
  local files in the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/SPLIT.tsv``)
  that MTEB and BEIR also read.

>>> data = RetrievalData(
...     queries={"q1": "How many eggs?"},
...     corpus={"d1": "16 - 3 = 13 eggs", "d2": "2 + 2 = 4"},
...     qrels={"q1": {"d1": 1}},
... )
>>> data.relevant("q1")
['d1']
>>> RetrievalData(queries={"q1": "?"}, corpus={"d1": "x"}, qrels={"q1": {"d9": 1}})
Traceback (most recent call last):
ValueError: qrels: query 'q1' judges document 'd9', which is not in the corpus
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .sources import read_hub, read_jsonl


@dataclass(frozen=True)
class RetrievalData:
    """One split of a retrieval task; every mapping is keyed by string ids."""

    queries: dict[str, str]
    """Query id -> query text."""
    corpus: dict[str, str]
    """Document id -> document text (the whole corpus, shared by every split)."""
    qrels: dict[str, dict[str, int]]
    """Query id -> {document id: relevance > 0}."""
    rationales: dict[str, str] = field(default_factory=dict)
    """Query id -> reasoning text for the explicit view (segments separated by blank
    lines); queries without one get a generated rationale when training needs it."""

    def __post_init__(self) -> None:
        for query_id in self.queries:
            if not self.qrels.get(query_id):
                raise ValueError(f"qrels: query {query_id!r} has no relevant document")
        for query_id, judged in self.qrels.items():
            if query_id not in self.queries:
                raise ValueError(f"qrels: query {query_id!r} is not among the queries")
            for doc_id, relevance in judged.items():
                if doc_id not in self.corpus:
                    raise ValueError(
                        f"qrels: query {query_id!r} judges document {doc_id!r}, "
                        "which is not in the corpus"
                    )
                if relevance <= 0:
                    raise ValueError(
                        f"qrels: query {query_id!r}, document {doc_id!r}: relevance must be > 0, "
                        f"got {relevance}"
                    )
        unknown = set(self.rationales) - set(self.queries)
        if unknown:
            raise ValueError(f"rationales: unknown query id {sorted(unknown)[0]!r}")

    def relevant(self, query_id: str) -> list[str]:
        """The query's relevant documents, most relevant first."""
        judged = self.qrels[query_id]
        return sorted(judged, key=lambda doc_id: -judged[doc_id])

    def limit(self, count: int | None) -> RetrievalData:
        """The first ``count`` queries (all when None) with the whole corpus."""
        if count is None:
            return self
        kept = list(self.queries)[:count]
        return RetrievalData(
            queries={q: self.queries[q] for q in kept},
            corpus=self.corpus,
            qrels={q: self.qrels[q] for q in kept},
            rationales={q: self.rationales[q] for q in kept if q in self.rationales},
        )


@dataclass(frozen=True)
class RetrievalTask:
    """A named retrieval task: ``load(split, **options)`` -> :class:`RetrievalData`."""

    kind: ClassVar[str] = "retrieval"

    name: str
    description: str
    loader: Callable[..., RetrievalData]
    splits: tuple[str, ...] = ("train", "test")

    def load(self, split: str, **options: Any) -> RetrievalData:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r}: unknown split {split!r}; splits: {self.splits}")
        return self.loader(split, **options)


# ---- BRIGHT-style data ---------------------------------------------------------------------

BRIGHT_HUB_ID = "xlangai/BRIGHT"


def load_bright(
    split: str,
    domain: str = "biology",
    data_dir: str | os.PathLike[str] | None = None,
    hub_id: str = BRIGHT_HUB_ID,
) -> RetrievalData:
    """BRIGHT-style data from ``data_dir`` (BEIR layout) or, without it, from the Hub.

    Local files: ``corpus.jsonl`` (``_id``, ``text``, optional ``title``), ``queries.jsonl``
    (``_id``, ``text``, optional ``reasoning``) and ``qrels/<split>.tsv`` (``query-id``,
    ``corpus-id``, ``score``, with a header row). On the Hub, BRIGHT's ``examples`` (``id``,
    ``query``, ``reasoning``, ``gold_ids``) and ``documents`` (``id``, ``content``) configs,
    split by ``domain``; every example is in ``split`` there, as BRIGHT is a test set.
    """
    if data_dir is not None:
        return _load_beir_folder(Path(data_dir), split)
    corpus = {str(r["id"]): r["content"] for _, r in read_hub(hub_id, "documents", domain)}
    queries, qrels, rationales = {}, {}, {}
    for where, row in read_hub(hub_id, "examples", domain):
        query_id = str(row["id"])
        queries[query_id] = row["query"]
        gold = [str(doc_id) for doc_id in row.get("gold_ids") or []]
        if not gold:
            raise ValueError(f"{where}: column 'gold_ids': empty")
        qrels[query_id] = dict.fromkeys(gold, 1)
        if row.get("reasoning"):
            rationales[query_id] = row["reasoning"]
    return RetrievalData(queries, corpus, qrels, rationales)


BRIGHT = RetrievalTask(
    name="bright",
    description="BRIGHT-style reasoning-intensive retrieval (Hub or BEIR-layout files).",
    loader=load_bright,
    splits=("train", "dev", "test"),
)


def _load_beir_folder(folder: Path, split: str) -> RetrievalData:
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    corpus = {}
    for where, row in read_jsonl(folder / "corpus.jsonl"):
        doc_id = _required(where, row, "_id")
        title = row.get("title") or ""
        corpus[doc_id] = f"{title}\n{row.get('text', '')}".strip() if title else row.get("text", "")
    queries, rationales = {}, {}
    for where, row in read_jsonl(folder / "queries.jsonl"):
        query_id = _required(where, row, "_id")
        if query_id in qrels:
            queries[query_id] = _required(where, row, "text")
            if row.get("reasoning"):
                rationales[query_id] = row["reasoning"]
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise ValueError(f"{folder / 'queries.jsonl'}: no query with _id {missing[0]!r} (in qrels)")
    return RetrievalData(queries, corpus, qrels, rationales)


def _required(where: str, row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or value == "":
        raise ValueError(f"{where}: column {column!r}: missing")
    return str(value)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise ValueError(f"qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header != ["query-id", "corpus-id", "score"]:
            raise ValueError(
                f"{path}: expected the header 'query-id corpus-id score', got {header}"
            )
        for line, fields in enumerate(reader, start=2):
            if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
                raise ValueError(f"{path} line {line}: expected query-id, corpus-id, integer score")
            if int(fields[2]) > 0:  # BEIR lists judged-irrelevant pairs with score 0
                qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    return qrels
