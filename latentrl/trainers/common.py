"""What every trainer shares: run folders, metrics, plots, RNG state, atomic checkpoints,
and the pieces that split a step's global batch across ``accelerate`` processes.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per step),
``checkpoint-NNNNNN/`` folders and, at the end, ``curves.png``. A checkpoint folder is
staged under a temporary name and renamed into place only when complete, so a crash
mid-save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import MethodType
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from latentrl.config import ConfigError
from latentrl.io import atomic_folder

CHECKPOINT_PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"


# ---- RNG state ---------------------------------------------------------------------------


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run depends on (global and the run's own generators)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


class EpochSampler:
    """Draws a recipe's training items in a fresh random order each epoch and remembers
    where it is (``order``, ``position``: saved in checkpoints), so a resumed run draws
    exactly what the uninterrupted run would have."""

    def __init__(self, items: Sequence[Any], generator: torch.Generator) -> None:
        self.items = items
        self.generator = generator
        self.order: list[int] = []
        self.position = 0

    def draw(self, count: int) -> list[Any]:
        picks = []
        while len(picks) < count:
            if self.position >= len(self.order):
                self.order = torch.randperm(len(self.items), generator=self.generator).tolist()
                self.position = 0
            picks.append(self.items[self.order[self.position]])
            self.position += 1
        return picks


# ---- checkpoints -------------------------------------------------------------------------


TRAINING_STATE_NAME = "training_state.pt"


def write_training_state(
    folder: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: dict[str, torch.Generator],
    counters: dict[str, Any],
    **extra: Any,
) -> None:
    """A checkpoint's training state: optimizer, LR scheduler, every random state and
    ``extra`` (data order, ...) in ``training_state.pt``; the trainer's counters (step,
    position, ...) in ``trainer_state.json``."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(generators),
        **extra,
    }
    torch.save(state, folder / TRAINING_STATE_NAME)
    (folder / STATE_NAME).write_text(json.dumps(counters, indent=2))


def read_training_state(
    folder: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: dict[str, torch.Generator],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore what :func:`write_training_state` saved; returns (counters, extra)."""
    # Loaded on the CPU: a GPU run's checkpoint resumes anywhere (the optimizer moves its
    # state to each parameter's device).
    state = torch.load(folder / TRAINING_STATE_NAME, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    set_rng_state(state.pop("rng"), generators)
    return json.loads((folder / STATE_NAME).read_text()), state


def save_checkpoint(run_dir: Path, step: int, write: Callable[[Path], None], keep: int = 2) -> Path:
    """Stage a checkpoint with ``write(folder)``, rename it into place, prune old ones."""
    final = run_dir / f"{CHECKPOINT_PREFIX}{step:06d}"
    with atomic_folder(final) as staging:
        write(staging)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders start with a dot)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


# ---- several processes -------------------------------------------------------------------
#
# Every process draws the whole step's batch (and its random noise) and keeps a contiguous
# share, so the data order and a resumed run do not depend on the number of processes.


def make_accelerator(cfg: Any, run_dir: Path) -> Accelerator:
    """The trainers' Accelerator: a GPU when there is one, ``cfg.mixed_precision``,
    ``cfg.gradient_accumulation_steps`` and the trackers of ``cfg.report_to``.

    DDP is told that some parameters may go unused in a step: DLR's projector in RL (only
    the warm start trains it), the heads of a loss switched off by a zero weight, LaSER's
    LM head with one latent step.
    """
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        # "none" rather than accelerate's "no", which YAML reads as false.
        mixed_precision="no" if cfg.mixed_precision == "none" else cfg.mixed_precision,
        log_with=cfg.report_to or None,
        project_dir=str(run_dir),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def process_share(accelerator, count: int) -> slice:
    """This process's contiguous share of ``count`` items: ``ceil(count / processes)`` each,
    so when ``count`` does not divide evenly the last shares are shorter (maybe empty)."""
    size = math.ceil(count / accelerator.num_processes)
    start = min(count, accelerator.process_index * size)
    return slice(start, min(count, start + size))


def require_even_split(
    accelerator, key: str, count: int, items: str, micro_batches: int = 1
) -> None:
    """A :class:`ConfigError` naming ``key`` unless its ``count`` ``items`` split evenly over
    the processes and ``micro_batches`` (a step's batch is shared out in equal parts;
    ``micro_batches``: the config's ``gradient_accumulation_steps``)."""
    processes = accelerator.num_processes
    if count % (processes * micro_batches):
        accumulation = (
            f" x {micro_batches} micro-batches (gradient_accumulation_steps)"
            if micro_batches > 1
            else ""
        )
        raise ConfigError(
            f"{key}: {count} {items} can't be split evenly over {processes} processes"
            + accumulation
        )


def accumulated_step(
    accelerator,
    model: torch.nn.Module,
    optimizer,
    max_grad_norm: float,
    micro_batches: Iterable[Callable[[], tuple[torch.Tensor, dict[str, float]]]],
) -> dict[str, float]:
    """One optimiser step, its gradient accumulated by accelerate over equal
    ``micro_batches`` (each a call returning ``(loss, stats)``; as many as the Accelerator's
    ``gradient_accumulation_steps``); ``model``: the prepared module. The gradient norm is
    clipped once all are in; returns the stats averaged over the micro-batches, with
    ``grad_norm``."""
    parts_stats = []
    for micro_batch in micro_batches:
        with accelerator.accumulate(model):
            loss, stats = micro_batch()
            parts_stats.append(stats)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()  # accelerate steps only once the micro-batches are in
            optimizer.zero_grad(set_to_none=True)
    stats = {key: sum(p[key] for p in parts_stats) / len(parts_stats) for key in parts_stats[0]}
    return stats | {"grad_norm": float(grad_norm)}


def gather_with_grad(accelerator, tensor: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """Every process's rows (its :func:`process_share` of ``count``; all ``tensor.shape[0]`` rows
    when None) concatenated in process order, keeping the graph.

    Each process's rows get the gradient of every process's copy of a loss on the result
    (summed), which DDP's averaging of the processes' gradients then undoes: a loss every
    process computes on the gathered rows trains as in one process.
    """
    if accelerator.num_processes == 1:
        return tensor
    missing = 0 if count is None else math.ceil(count / accelerator.num_processes) - len(tensor)
    if missing:  # all-gather needs equal shapes: pad a short share, drop the padding after
        tensor = torch.cat([tensor, tensor.new_zeros(missing, *tensor.shape[1:])])
    # The public autograd all-gather; torch suggests a private replacement, so its
    # deprecation notice is silenced rather than followed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        gathered = torch.cat(torch.distributed.nn.functional.all_gather(tensor))
    return gathered if count is None else gathered[:count]


def mean_over_processes(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Each statistic averaged over the processes: a mean over equal shares of the batch
    equals the mean over the whole batch."""
    if accelerator.num_processes == 1 or not stats:
        return stats
    values = torch.tensor(list(stats.values()), device=accelerator.device)
    means = accelerator.reduce(values, "mean").tolist()
    return dict(zip(stats, means, strict=True))


class Objective(torch.nn.Module):
    """A training step's whole loss as one module call, for DDP.

    DDP all-reduces the gradients of the parameters its wrapped module's ``forward`` used.
    A trainer whose losses call several modules and methods wraps them here, so one
    ``forward`` computes everything: ``compute(*args)``, which returns ``(loss, stats)``
    and uses the ``modules``' parameters.

    A trainer's bound method is held weakly: a strong reference would close the cycle
    trainer -> DDP wrapper -> objective -> trainer, which only the cyclic garbage collector
    frees, possibly during interpreter shutdown, where DDP's reducer then tears down its
    gloo process group and the process aborts ("terminate called without an active
    exception"). Without the cycle, everything goes when the trainer does.
    """

    def __init__(self, compute: Callable[..., Any], **modules: torch.nn.Module) -> None:
        super().__init__()
        self._compute = (
            weakref.WeakMethod(compute) if isinstance(compute, MethodType) else lambda: compute
        )
        self.parts = torch.nn.ModuleDict(modules)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        compute = self._compute()
        if compute is None:
            raise RuntimeError("Objective called after the trainer that owns it was freed")
        return compute(*args, **kwargs)


def end_run(accelerator) -> None:
    """Close the trackers, and in a multi-process run the process group accelerate started."""
    if accelerator.num_processes > 1:
        # No process leaves the group while another still talks to it, and accelerate drops
        # its references to the DDP wrappers, so they go before the group does.
        accelerator.wait_for_everyone()
        accelerator.free_memory()
        accelerator.end_training()
    else:
        # A single process has no group of accelerate's; the default group there, if any,
        # belongs to an in-process vLLM engine that may still be serving.
        for tracker in accelerator.trackers:
            tracker.finish()


# ---- metrics -----------------------------------------------------------------------------


class MetricsLog:
    """Appends one JSON object per step to ``metrics.jsonl`` and forwards to accelerate's trackers.

    On resume, lines past the resumed step (written after the checkpoint) are dropped so the
    log reads as one uninterrupted run.
    """

    def __init__(self, run_dir: Path, accelerator=None, resume_step: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.accelerator = accelerator
        # One writer: in multi-process runs the other processes only forward to trackers.
        self.writes = accelerator is None or accelerator.is_main_process
        if not self.writes:
            return
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [row for row in read_metrics(self.path) if row["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.writes:
            row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        if self.accelerator is not None:
            self.accelerator.log(metrics, step=step)

    def rows(self) -> list[dict[str, Any]]:
        """Every step logged so far (read back from the file)."""
        return read_metrics(self.path)

    def plot(self, keys: Iterable[str], title: str) -> None:
        """``curves.png`` beside the log, a panel per metric in ``keys`` (by the writer)."""
        if self.writes:
            plot_curves(self.rows(), keys, self.path.with_name("curves.png"), title)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(
    metrics: Sequence[dict[str, Any]], keys: Iterable[str], path: Path, title: str
) -> None:
    """One PNG with a panel per metric over steps (raw and a moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in row for row in metrics)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        points = [(row["step"], row[key]) for row in metrics if row.get(key) is not None]
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, alpha=0.35, label="per step")
        ax.plot(steps, moving_average(values, 10), label="moving average (10)")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value
