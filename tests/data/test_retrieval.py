"""Ranking metrics (trec_eval via pytrec_eval) against hand-computed values; search; the BEIR/MTEB interface."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentrl.config import RetrieverSettings
from latentrl.data.retrieval import RetrieverModel, per_query_metrics, ranking_metrics, search
from latentrl.models.retriever import LaSERRetriever


def test_metrics_match_hand_computation():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}, "q3": {"z": 1}}
    run = {
        "q1": {"x": 0.9, "a": 0.8, "y": 0.1},  # relevant at rank 2
        "q2": {"b": 0.9, "x": 0.5, "c": 0.4},  # relevant at ranks 1 and 3
        "q3": {"x": 0.3},  # its relevant document is not retrieved
    }
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    metrics = ranking_metrics(qrels, run)
    assert metrics["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metrics["recall@10"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["recall@100"] == metrics["recall@10"]
    per_query = per_query_metrics(qrels, run)
    assert per_query["q1"] == pytest.approx(
        {"ndcg@10": ndcg_q1, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 0.5}
    )
    assert per_query["q2"]["ndcg@10"] == pytest.approx(ndcg_q2)
    assert per_query["q3"] == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    with pytest.raises(ValueError, match="run: no ranking for query 'q3'"):
        ranking_metrics(qrels, {"q1": run["q1"], "q2": run["q2"]})


def test_search_ranks_by_cosine_and_keeps_the_top_k():
    docs = np.eye(3, dtype=np.float32)
    queries = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    run = search(queries, docs, ["q"], ["d0", "d1", "d2"], top_k=2)
    assert list(run["q"]) == ["d1", "d0"]
    assert run["q"]["d1"] == pytest.approx(0.8)


def test_retriever_model_encodes_queries_and_beir_documents(tiny_model_dir):
    retriever = LaSERRetriever.from_backbone(tiny_model_dir, RetrieverSettings(lora=False))
    model = RetrieverModel(retriever, batch_size=2)
    queries = model.encode_queries(["What is 2 + 3?", "Eva has 5 stamps."])
    corpus = model.encode_corpus(
        [{"title": "Sums", "text": "2 + 3 = 5"}, "5 + 1 = 6", {"text": "no title"}]
    )
    assert queries.shape == (2, retriever.hidden_size) and queries.dtype == np.float32
    assert corpus.shape == (3, retriever.hidden_size)
    assert np.allclose(np.linalg.norm(corpus, axis=1), 1, atol=1e-5)
    with torch.no_grad():
        expected, _ = retriever.encode_latent(["Sums\n2 + 3 = 5"], 512)
    assert np.allclose(corpus[0], expected[0].numpy(), atol=1e-5)


def test_without_latent_documents_the_corpus_is_encoded_by_its_eos_state(tiny_model_dir):
    settings = RetrieverSettings(lora=False, latent_documents=False)
    retriever = LaSERRetriever.from_backbone(tiny_model_dir, settings)
    model = RetrieverModel(retriever)
    texts = ["2 + 3 = 5", "Eva has 5 stamps."]
    with torch.no_grad():
        plain, _ = retriever.encode_latent(texts, steps=1)
        latent, _ = retriever.encode_latent(texts)
    assert retriever.document_steps == 1
    assert np.allclose(model.encode_corpus(texts), plain.numpy(), atol=1e-5)
    assert np.allclose(model.encode_queries(texts), latent.numpy(), atol=1e-5)  # K = 3
    assert not np.allclose(plain.numpy(), latent.numpy(), atol=1e-3)
