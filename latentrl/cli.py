"""The ``latentrl`` command.

Subcommands take ``--config FILE`` plus any number of ``key.sub=value`` overrides, like
``latentrl demo --config configs/demo.yaml eval_problems=100 rollout.backend=hf``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from latentrl.config import ConfigError


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="override a config value"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentrl",
        description="Train and serve latent reasoning for LLMs (DLR, CoCoVa, LaSER) "
        "on one vLLM rollout engine.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="build a tiny model, pre-train it on a task and evaluate it through the rollout engine",
        description="The quickest end-to-end run: a tiny model pre-trained on a task "
        "(cached), then greedy decoding of held-out problems through the shared rollout "
        "engine, scored with the task's rewards.",
    )
    _add_config_arguments(demo)

    train = commands.add_parser("train", help="train with one of latentrl's methods")
    methods = train.add_subparsers(dest="method", metavar="METHOD", required=True)
    dlr = methods.add_parser(
        "dlr",
        help="DLR: latent-space contrastive RL of an assistant for a frozen main model",
        description="Train a latent plugin with DLR (see configs/dlr_*.yaml).",
    )
    _add_config_arguments(dlr)
    dlr.add_argument(
        "--resume", action="store_true", help="continue from the run's latest checkpoint"
    )

    commands.add_parser("tasks", help="list the available tasks", description="List tasks.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "tasks":
            return _list_tasks()
        if args.command == "train":
            from latentrl.trainers import dlr

            return dlr.main(args.config, args.overrides, resume=args.resume)
        if args.command == "demo":
            from latentrl.demo import run_demo

            return run_demo(args.config, args.overrides)
    except ConfigError as err:
        print(f"latentrl {args.command}: config error: {err}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")


def _list_tasks() -> int:
    from latentrl.tasks import list_tasks

    tasks = list_tasks()
    width = max(len(task.name) for task in tasks)
    for task in tasks:
        rewards = ", ".join(task.default_rewards)
        print(
            f"{task.name:<{width}}  {task.description}  [rewards: {rewards}; metric: {task.metric}]"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
