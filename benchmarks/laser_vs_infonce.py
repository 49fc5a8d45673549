"""LaSER vs plain InfoNCE on `gsm8k_retrieval`, several seeds, same data and steps.

For every seed, trains ``configs/laser_gsm8k_tiny.yaml`` and its plain-InfoNCE baseline
``configs/laser_gsm8k_tiny_infonce.yaml`` (same backbone, queries, hard negatives, steps and
batch; the seed sets the order of the training queries) and scores both on the held-out
questions against the whole corpus. Prints each seed's nDCG@10 / Recall@10 / MRR@10, the
means over seeds and, per metric, the mean difference with a bootstrap 95% interval that
resamples both the seeds and the queries, and on how many seeds LaSER is ahead (the seed
noise here is as large as the effects, so one seed proves nothing).

A finished run leaves ``OUTPUT/METHOD/seedN/per_query.json`` (with the config and the
overrides it ran with) and is reused by later calls, so seeds can be shared out over processes, one core
each, and the table printed by a last call over all of them:

    python benchmarks/laser_vs_infonce.py [--seeds 0 1 2 3 4] [--output-dir DIR]
        [--set KEY=VALUE ...] [--laser-set KEY=VALUE ...]
        [--laser-config YAML --infonce-config YAML]

``--set`` overrides both configs (e.g. ``steps=300``), ``--laser-set`` only LaSER's.
``--laser-config`` / ``--infonce-config`` pick another pair, e.g. SmolLM2's
(``configs/laser_gsm8k_smollm2.yaml`` and ``configs/laser_gsm8k_smollm2_infonce.yaml``).

About 8 + 5 minutes per seed on one CPU core (LaSER + plain) with the tiny backbone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from latentrl.config import LaSERConfig, load_config
from latentrl.data.retrieval import RetrieverModel, per_query_metrics, rank_corpus
from latentrl.io import config_identity, finished_run, write_json
from latentrl.trainers.laser import LaSERTrainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "laser": ROOT / "configs" / "laser_gsm8k_tiny.yaml",
    "infonce": ROOT / "configs" / "laser_gsm8k_tiny_infonce.yaml",
}
SHOWN = ("ndcg@10", "recall@10", "mrr@10")
RESAMPLES = 10_000


def run_once(method: str, config: Path, seed: int, overrides: list[str], folder: Path) -> dict:
    """Train one method at one seed (or reuse its finished run): per-query metrics."""
    record_path = folder / "per_query.json"
    ran_with = {"config": config_identity(config), "overrides": overrides, "seed": seed}
    if (record := finished_run(record_path, ran_with)) is not None:
        return record
    cfg = load_config(
        LaSERConfig,
        config,
        [*overrides, f"seed={seed}", f"output_dir={folder}", "loop.checkpoint_every=0"],
    )
    trainer = LaSERTrainer(cfg)
    trainer.setup()
    started = time.perf_counter()
    trainer.train()
    trained_s = time.perf_counter() - started
    run, _ = rank_corpus(
        RetrieverModel(trainer.retriever, cfg.encode_batch_size), trainer.eval_data
    )
    trainer.cleanup()
    record = {
        "method": method,
        "seed": seed,
        "ran_with": ran_with,
        "train_seconds": trained_s,
        "per_query": per_query_metrics(trainer.eval_data.qrels, run),
    }
    write_json(record_path, record)
    return record


def means(record: dict) -> dict[str, float]:
    rows = record["per_query"].values()
    return {name: float(np.mean([row[name] for row in rows])) for name in SHOWN}


def bootstrap_interval(differences: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of ``differences`` [seeds, queries], resampling seeds and
    queries independently."""
    generator = np.random.default_rng(seed)
    num_seeds, num_queries = differences.shape
    seeds = generator.integers(num_seeds, size=(RESAMPLES, num_seeds))
    queries = generator.integers(num_queries, size=(RESAMPLES, num_queries))
    # Mean over a resampled grid = mean over resampled seeds of the per-seed resampled means.
    per_seed = np.stack([differences[:, q].mean(axis=1) for q in queries])  # [R, seeds]
    samples = np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def report(records: dict[tuple[str, int], dict], seeds: list[int]) -> str:
    header = f"{'seed':<6}" + "".join(
        f"{f'{method} {name}':>18}" for method in CONFIGS for name in SHOWN
    )
    lines = [header]
    table = {key: means(record) for key, record in records.items()}
    for seed in seeds:
        cells = [table[(method, seed)][name] for method in CONFIGS for name in SHOWN]
        lines.append(f"{seed:<6}" + "".join(f"{value:>18.4f}" for value in cells))
    averages = [
        np.mean([table[(method, seed)][name] for seed in seeds])
        for method in CONFIGS
        for name in SHOWN
    ]
    lines.append(f"{'mean':<6}" + "".join(f"{value:>18.4f}" for value in averages))

    query_ids = sorted(records[("laser", seeds[0])]["per_query"])
    lines.append(f"\nLaSER - InfoNCE over {len(seeds)} seeds x {len(query_ids)} queries:")
    for name in SHOWN:
        differences = np.array(
            [
                [
                    records[("laser", seed)]["per_query"][q][name]
                    - records[("infonce", seed)]["per_query"][q][name]
                    for q in query_ids
                ]
                for seed in seeds
            ]
        )
        wins = int((differences.mean(axis=1) > 0).sum())
        low, high = bootstrap_interval(differences)
        lines.append(
            f"{name:<11}{differences.mean():+.4f}  (95% bootstrap interval {low:+.4f} .. "
            f"{high:+.4f}); LaSER ahead on {wins} of {len(seeds)} seeds"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "laser_vs_infonce")
    parser.add_argument(
        "--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
        help="config overrides of both methods (e.g. steps=300)",
    )  # fmt: skip
    parser.add_argument(
        "--laser-set", dest="laser_overrides", nargs="*", default=[], metavar="KEY=VALUE",
        help="config overrides of LaSER only (e.g. loss.distill_weight=2)",
    )  # fmt: skip
    parser.add_argument("--laser-config", type=Path, default=CONFIGS["laser"])
    parser.add_argument("--infonce-config", type=Path, default=CONFIGS["infonce"])
    args = parser.parse_args()
    configs = {"laser": args.laser_config, "infonce": args.infonce_config}
    overrides = {"laser": args.overrides + args.laser_overrides, "infonce": args.overrides}
    records = {}
    for seed in args.seeds:
        for method in CONFIGS:
            folder = args.output_dir / method / f"seed{seed}"
            records[(method, seed)] = run_once(
                method, configs[method], seed, overrides[method], folder
            )
            record = records[(method, seed)]
            print(
                f"{method} seed {seed}: {json.dumps(means(record))}, "
                f"trained {record['train_seconds']:.0f} s"
            )
    print(report(records, args.seeds))


if __name__ == "__main__":
    main()
