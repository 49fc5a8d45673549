"""Query-encoding latency of LaSER's latent view vs the explicit view vs a plain retriever.

On the tiny GSM8K backbone of ``configs/laser_gsm8k_tiny.yaml`` (built once, then cached),
encodes gsm8k_retrieval's held-out questions one at a time, as an online search would:

- plain retriever: the same weights read ``query <EOS>`` (K = 1);
- LaSER latent view: the same plus K - 1 soft tokens on the KV cache;
- explicit view: a rationale decoded by the shared rollout engine first, then
  ``query + rationale + <EOS>`` encoded (rewrite-then-retrieve);

and prints milliseconds per query with the ratios to the plain retriever, all measured in
this one run. Latency does not depend on training, so the retriever is the untrained one.

    python benchmarks/laser_latency.py [--queries 32] [--rationale-tokens 64] [--backend hf]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from tempfile import TemporaryDirectory

from latentrl.config import LaSERConfig, RetrievalEvalConfig, load_config
from latentrl.eval.retrieval import format_latency, latency_with_engine
from latentrl.models.retriever import LaSERRetriever
from latentrl.tasks import get_task
from latentrl.trainers.laser import backbone_path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--rationale-tokens", type=int, default=64)
    parser.add_argument("--backend", default="hf", help="rollout backend for the rationale")
    args = parser.parse_args()
    cfg = load_config(LaSERConfig, ROOT / "configs" / "laser_gsm8k_tiny.yaml")
    data = get_task(cfg.task.name, kind="retrieval").load("test", **cfg.task.options)
    queries = list(data.queries.values())[: args.queries]
    with TemporaryDirectory() as scratch:
        folder = Path(scratch) / "retriever"
        LaSERRetriever.from_backbone(backbone_path(cfg), cfg.retriever).save_pretrained(folder)
        retriever = LaSERRetriever.from_pretrained(folder)
        eval_cfg = load_config(
            RetrievalEvalConfig,
            overrides=[
                f"retriever={folder}",
                f"rationale.max_tokens={args.rationale_tokens}",
                f"rollout.backend={args.backend}",
            ],
        )
        latency = latency_with_engine(folder, retriever, queries, eval_cfg)
    print(
        f"{len(queries)} gsm8k_retrieval questions, one at a time; K = "
        f"{cfg.retriever.latent_steps}; rationale: up to {args.rationale_tokens} tokens "
        f"({args.backend} backend)"
    )
    print(format_latency(latency))


if __name__ == "__main__":
    main()
