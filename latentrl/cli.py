"""The ``latentrl`` command.

Subcommands take ``--config FILE`` plus any number of ``key.sub=value`` overrides, like
``latentrl demo --config configs/demo.yaml eval_problems=100 rollout.backend=hf``.
"""

from __future__ import annotations

import argparse
import json
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


# latentrl train METHOD: (name, help, description, takes --resume)
TRAIN_METHODS = (
    (
        "dlr",
        "DLR: latent-space contrastive RL of an assistant for a frozen main model",
        "Train a latent plugin with DLR (see configs/dlr_*.yaml).",
        True,
    ),
    (
        "grpo",
        "token-level GRPO (TRL) training a LoRA reasoning adapter on the main model",
        "Train a LoRA adapter with TRL's GRPOTrainer on a task's rewards.",
        False,
    ),
    (
        "cocova",
        "CoCoVa: latent visual thoughts from a Latent Q-Former for a language model",
        "Train a CoCoVa plugin on an image-QA task (see configs/cocova_*.yaml).",
        True,
    ),
    (
        "laser",
        "LaSER: a dense retriever reasoning in soft tokens, distilled from explicit reasoning",
        "Train a LaSER retriever on a retrieval task (see configs/laser_*.yaml).",
        True,
    ),
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
        help="DLR end to end: a tiny frozen main model, a latent plugin trained for it",
        description="The quickest end-to-end run: a tiny main model pre-trained on a task "
        "(cached) and frozen, a latent plugin trained for it with DLR (rollouts through the "
        "shared engine), and held-out accuracy before and after.",
    )
    _add_config_arguments(demo)

    train = commands.add_parser("train", help="train with one of latentrl's methods")
    methods = train.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, help_text, description, resumable in TRAIN_METHODS:
        method = methods.add_parser(name, help=help_text, description=description)
        _add_config_arguments(method)
        if resumable:
            method.add_argument(
                "--resume", action="store_true", help="continue from the run's latest checkpoint"
            )
    _add_eval_parser(commands)
    _add_serve_parser(commands)
    _add_inspect_parser(commands)
    commands.add_parser("tasks", help="list the available tasks", description="List tasks.")
    models = commands.add_parser(
        "models",
        help="list the named models (real checkpoints had without a model hub)",
        description="List the named models that --model, main_model= and the like accept, "
        "or prepare one now (it is also prepared on first use).",
    )
    models.add_argument("action", nargs="?", choices=["list", "prepare"], default="list")
    models.add_argument("name", nargs="?", help="the model to prepare")
    return parser


def _add_eval_parser(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="accuracy of a model (with a latent plugin or LoRA adapter) on a task",
        description="Decode a task's problems through the rollout engine and score them "
        "(strict and flexible accuracy, pass@1, maj@n, format rate, tokens, latency).",
    )
    _add_config_arguments(evaluate)
    evaluate.add_argument(
        "--model", help="main model: a folder, a Hub id or a named model (see `latentrl models`)"
    )
    evaluate.add_argument("--task", help="task name or task file (see `latentrl tasks`)")
    evaluate.add_argument("--plugin", help="latent plugin folder")
    evaluate.add_argument("--adapter", help="PEFT LoRA adapter folder for the main model")
    evaluate.add_argument("--limit", type=int, help="first N problems of the split")
    evaluate.add_argument("--n", type=int, help="samples per problem")
    evaluate.add_argument("--temperature", type=float)
    evaluate.add_argument("--seed", type=int)
    evaluate.add_argument("--output-dir", help="where summary.json and samples.jsonl go")
    evaluate.add_argument(
        "--retriever", help="LaSER retriever folder: rank a retrieval task's corpus instead"
    )


def _add_serve_parser(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="OpenAI-compatible server for a frozen model with latent plugins",
        description="Serve the main model and latent plugins behind /v1/completions, "
        "/v1/chat/completions and /v1/models (plugins load and unload at runtime). On the "
        "vLLM backend it runs on vLLM's async engine: continuous batching, tokens streamed "
        "as they are generated.",
    )
    _add_config_arguments(serve)
    serve.add_argument(
        "--model", help="main model: a folder, a Hub id or a named model (see `latentrl models`)"
    )
    serve.add_argument(
        "--plugin", action="append", default=[], metavar="NAME=PATH",
        help="serve the latent plugin folder PATH as model NAME (repeatable)",
    )  # fmt: skip
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")


def _add_inspect_parser(commands) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="what latents say (DLR plugins, LaSER retrievers): token readings, pictures",
        description="Read each latent slot of a DLR plugin through the frozen main model "
        "(nearest vocabulary tokens, the logit lens), or each latent step of a LaSER retriever "
        "(its soft token's distribution), on a task's questions; writes inspect.json and PNG "
        "pictures to --output-dir and prints a summary.",
    )
    _add_config_arguments(inspect)
    inspect.add_argument("--plugin", help="DLR plugin folder")
    inspect.add_argument("--retriever", help="LaSER retriever folder")
    inspect.add_argument("--task", help="task name (default: the task the plugin was trained on)")
    inspect.add_argument("--limit", type=int, help="first N questions of the split")
    inspect.add_argument("--output-dir", help="where inspect.json and the pictures go")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "tasks":
            return _list_tasks()
        if args.command == "models":
            return _models(args)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "train" and args.method == "grpo":
            from latentrl.trainers import grpo

            return grpo.main(args.config, args.overrides)
        if args.command == "train" and args.method == "laser":
            from latentrl.trainers import laser

            return laser.main(args.config, args.overrides, resume=args.resume)
        if args.command == "train" and args.method == "cocova":
            from latentrl.trainers import cocova

            return cocova.main(args.config, args.overrides, resume=args.resume)
        if args.command == "train":
            from latentrl.trainers import dlr

            return dlr.main(args.config, args.overrides, resume=args.resume)
        if args.command == "eval" and args.retriever:
            return _evaluate_retrieval(args)
        if args.command == "eval":
            return _evaluate(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            from latentrl.demo import run_demo

            return run_demo(args.config, args.overrides)
    except ConfigError as err:
        print(f"latentrl {args.command}: config error: {err}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")


# `latentrl eval` flags and the config keys they set.
EVAL_FLAGS = {
    "model": "model", "task": "task.name", "plugin": "plugin", "adapter": "adapter",
    "limit": "limit", "n": "n", "temperature": "temperature", "seed": "seed",
    "output_dir": "output_dir",
}  # fmt: skip


def _flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    """``key=value`` overrides for the flags given; text is quoted so it stays text
    (an API key ``123`` or a model named ``yes`` is not read as a number or a boolean)."""
    return [
        f"{key}={json.dumps(value) if isinstance(value, str) else value}"
        for flag, key in flags.items()
        if (value := getattr(args, flag)) is not None
    ]


def _evaluate(args: argparse.Namespace) -> int:
    from latentrl.config import EvalConfig, load_config
    from latentrl.eval.run import run_eval

    flags = _flag_overrides(args, EVAL_FLAGS)
    run_eval(load_config(EvalConfig, args.config, [*flags, *args.overrides]))
    return 0


# `latentrl eval --retriever` flags and the config keys they set.
RETRIEVAL_EVAL_FLAGS = {
    "retriever": "retriever", "task": "task.name", "limit": "limit", "output_dir": "output_dir",
}  # fmt: skip


def _evaluate_retrieval(args: argparse.Namespace) -> int:
    from latentrl.config import RetrievalEvalConfig, load_config
    from latentrl.eval.retrieval import run_retrieval_eval

    unused = [f"--{flag}" for flag in ("model", "plugin", "adapter", "n", "temperature", "seed")
              if getattr(args, flag) is not None]  # fmt: skip
    if unused:
        raise ConfigError(f"{', '.join(unused)}: not used with --retriever")
    flags = _flag_overrides(args, RETRIEVAL_EVAL_FLAGS)
    run_retrieval_eval(load_config(RetrievalEvalConfig, args.config, [*flags, *args.overrides]))
    return 0


# `latentrl serve` flags and the config keys they set (plugins come from --plugin NAME=PATH).
SERVE_FLAGS = {"model": "model", "host": "host", "port": "port", "api_key": "api_key"}


def _serve(args: argparse.Namespace) -> int:
    from latentrl.config import ServeConfig, load_config
    from latentrl.serve.app import serve

    flags = _flag_overrides(args, SERVE_FLAGS)
    for item in args.plugin:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--plugin {item!r}: expected NAME=PATH")
        flags.append(f"plugins.{name}={json.dumps(path)}")
    return serve(load_config(ServeConfig, args.config, [*flags, *args.overrides]))


# `latentrl inspect` flags and the config keys they set.
INSPECT_FLAGS = {
    "plugin": "plugin",
    "retriever": "retriever",
    "task": "task.name",
    "limit": "limit",
    "output_dir": "output_dir",
}


def _inspect(args: argparse.Namespace) -> int:
    from latentrl.config import InspectConfig, load_config
    from latentrl.inspection import run_inspect

    cfg = load_config(
        InspectConfig, args.config, [*_flag_overrides(args, INSPECT_FLAGS), *args.overrides]
    )
    try:
        run_inspect(cfg)
    except (OSError, ValueError) as err:  # not a plugin, another main model, a bad task
        print(f"latentrl inspect: {err}", file=sys.stderr)
        return 2
    return 0


def _models(args: argparse.Namespace) -> int:
    from latentrl.models.named import (
        NAMED_MODELS,
        UnknownModelError,
        prepare_model,
        prepared_folder,
    )

    if args.action == "prepare":
        if not args.name:
            raise ConfigError(f"models prepare: name one of {', '.join(NAMED_MODELS)}")
        try:
            print(prepare_model(args.name))
        except (UnknownModelError, ValueError, RuntimeError) as err:
            print(f"latentrl models: {err}", file=sys.stderr)
            return 2
        return 0
    width = max(map(len, NAMED_MODELS))
    for model in NAMED_MODELS.values():
        folder = prepared_folder(model.name)
        where = f"prepared: {folder}" if folder else "not prepared yet (prepared on first use)"
        print(f"{model.name:<{width}}  {model.description}")
        print(
            f"{'':<{width}}  from PyPI {model.package}=={model.version}, {model.license}; {where}"
        )
    return 0


def _list_tasks() -> int:
    from latentrl.tasks import list_tasks

    tasks = list_tasks()
    width = max(len(task.name) for task in tasks)
    for task in tasks:
        print(f"{task.name:<{width}}  {task.kind:<9}  {task.description}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
