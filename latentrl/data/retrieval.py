"""A retriever's ranking and its metrics (trec_eval), and rationales decoded by the rollout
engine: shared by the LaSER trainer (its held-out evaluation, its explicit view) and
``latentrl eval --retriever``.

The whole corpus and the split's queries are encoded with the latent view, ranked by
cosine similarity, and the top 100 scored with trec_eval: nDCG@10, Recall@10, Recall@100,
MRR@10.

:class:`RetrieverModel` is the BEIR/MTEB "dense retrieval model" interface
(``encode_queries`` / ``encode_corpus`` returning arrays), so the retriever plugs into
that tooling as it is:

>>> model = RetrieverModel(LaSERRetriever.from_pretrained("runs/laser/retriever"))  # doctest: +SKIP
>>> model.encode_queries(["How many eggs?"], batch_size=32).shape  # doctest: +SKIP
(1, 128)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from latentrl.config import RationaleConfig
from latentrl.models.retriever import LaSERRetriever
from latentrl.rollout import RolloutEngine, SamplingParams
from latentrl.tasks import RetrievalData

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
TOP_K = 100


class RetrieverModel:
    """The latent view behind the BEIR/MTEB ``encode_queries`` / ``encode_corpus`` interface.

    ``steps`` overrides the retriever's K (1: plain last-token retrieval on its weights).
    """

    def __init__(
        self, retriever: LaSERRetriever, batch_size: int = 64, steps: int | None = None
    ) -> None:
        self.retriever = retriever
        self.batch_size = batch_size
        self.steps = steps

    def encode_queries(
        self, queries: Sequence[str], batch_size: int | None = None, **kwargs: Any
    ) -> np.ndarray:
        """Unit vectors [len(queries), H] (float32)."""
        return self._encode(
            queries, self.retriever.settings.max_query_tokens, batch_size, self.steps
        )

    def encode_corpus(
        self,
        corpus: Sequence[str | Mapping[str, str]],
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Unit vectors of documents given as strings or BEIR dicts (``title``, ``text``)."""
        texts = [doc if isinstance(doc, str) else _beir_text(doc) for doc in corpus]
        steps = self.steps or self.retriever.document_steps
        return self._encode(texts, self.retriever.settings.max_document_tokens, batch_size, steps)

    def _encode(
        self, texts: Sequence[str], max_tokens: int, batch_size: int | None, steps: int | None
    ) -> np.ndarray:
        vectors = self.retriever.embed(
            list(texts), max_tokens, batch_size or self.batch_size, steps=steps
        )
        return vectors.numpy()


def _beir_text(doc: Mapping[str, str]) -> str:
    return f"{doc.get('title') or ''}\n{doc['text']}".strip()


def search(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_k: int = TOP_K,
) -> dict[str, dict[str, float]]:
    """Top-k documents per query by dot product (cosine for unit vectors): a TREC run."""
    scores = torch.from_numpy(query_vectors) @ torch.from_numpy(doc_vectors).T
    values, indices = scores.topk(min(top_k, len(doc_ids)), dim=1)
    return {
        query_id: {doc_ids[i]: float(v) for v, i in zip(row_values, row_indices, strict=True)}
        for query_id, row_values, row_indices in zip(
            query_ids, values.tolist(), indices.tolist(), strict=True
        )
    }


# Our metric names and trec_eval's measures (MRR@10 is trec_eval's reciprocal rank of a
# ranking cut at 10).
TREC_MEASURES = {"ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@100": "recall_100"}


def per_query_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """nDCG@10, Recall@10, Recall@100 and MRR@10 of every judged query (trec_eval's
    definitions, through pytrec_eval)."""
    import pytrec_eval

    missing = set(qrels) - set(run)
    if missing:
        raise ValueError(f"run: no ranking for query {sorted(missing)[0]!r}")
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    full = {q: {d: float(s) for d, s in run[q].items()} for q in qrels}
    top10 = {
        q: dict(sorted(docs.items(), key=lambda item: -item[1])[:10]) for q, docs in full.items()
    }
    measured = pytrec_eval.RelevanceEvaluator(judged, set(TREC_MEASURES.values())).evaluate(full)
    reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    # trec_eval leaves out a query whose ranking is empty: it scores 0 on every measure.
    return {
        q: {name: measured.get(q, {}).get(measure, 0.0) for name, measure in TREC_MEASURES.items()}
        | {"mrr@10": reciprocal.get(q, {}).get("recip_rank", 0.0)}
        for q in qrels
    }


def ranking_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """The means of :func:`per_query_metrics` over the judged queries."""
    per_query = per_query_metrics(qrels, run)
    return {name: sum(row[name] for row in per_query.values()) / len(qrels) for name in METRICS}


def rank_corpus(
    model: RetrieverModel, data: RetrievalData
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The top-100 run of ``data``'s queries over its whole corpus, and the encoding times."""
    doc_ids, query_ids = list(data.corpus), list(data.queries)
    started = time.perf_counter()
    doc_vectors = model.encode_corpus([data.corpus[d] for d in doc_ids])
    encoded = time.perf_counter()
    query_vectors = model.encode_queries([data.queries[q] for q in query_ids])
    queried = time.perf_counter()
    timings = {
        "corpus_encode_seconds": encoded - started,
        "query_encode_seconds": queried - encoded,
    }
    return search(query_vectors, doc_vectors, query_ids, doc_ids), timings


def evaluate_retriever(model: RetrieverModel, data: RetrievalData) -> dict[str, float]:
    """Ranking metrics of ``model`` on ``data`` (whole corpus), plus encoding times."""
    run, timings = rank_corpus(model, data)
    return {
        **ranking_metrics(data.qrels, run),
        "num_queries": len(data.queries),
        "num_documents": len(data.corpus),
        **timings,
    }


# ---- rationales and latency ------------------------------------------------------------------


def generate_rationales(
    engine: RolloutEngine, tokenizer, queries: Sequence[str], cfg: RationaleConfig
) -> list[str]:
    """One rationale per query, decoded by the rollout engine from ``cfg.prompt_template``."""
    prompts = [
        tokenizer(cfg.prompt_template.replace("{query}", query), add_special_tokens=False)[
            "input_ids"
        ]
        for query in queries
    ]
    params = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    return [output.completions[0].text.strip() for output in engine.generate(prompts, params)]
