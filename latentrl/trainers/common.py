"""What every trainer shares: the recipe skeleton (:class:`Recipe`, :class:`TrainState`,
:class:`EpochSampler`), run folders, RNG state, atomic checkpoints, and the pieces that
split a step's global batch across ``accelerate`` processes.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MethodType
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from tqdm.auto import tqdm
from transformers import get_scheduler

from latentrl.config import ConfigError, LoopConfig, save_config
from latentrl.io import atomic_folder
from latentrl.trainers.metrics import MetricsLog

CHECKPOINT_PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"
TRAINING_STATE_NAME = "training_state.pt"
"""Optimiser, LR scheduler and random states (tensors, unlike the JSON state)."""


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


STATE_FORMAT_VERSION = 2
"""Version of ``trainer_state.json``; 1 (unversioned): before the shared recipe skeleton."""


@dataclass
class TrainState:
    """Where a run is, saved as ``trainer_state.json`` in every checkpoint: the loop's
    counters and the data order, so that a resumed run goes on exactly as the
    uninterrupted one would have."""

    step: int = 0
    elapsed_s: float = 0.0
    """Seconds of training so far (the slowest process's), for a time budget."""
    best_eval: float | None = None
    """The best held-out score evaluated during training (DLR keeps its plugin)."""
    order: list[int] = field(default_factory=list)
    """This epoch's order of the training items (:class:`EpochSampler`)."""
    position: int = 0
    """How many of ``order`` are drawn."""
    format_version: int = STATE_FORMAT_VERSION


class EpochSampler:
    """Draws a recipe's training items in a fresh random order each epoch; where it is
    lives in the run's :class:`TrainState` (``order``, ``position``), so a resumed run draws
    exactly what the uninterrupted run would have."""

    def __init__(self, items: Sequence[Any], generator: torch.Generator, state: TrainState) -> None:
        self.items = items
        self.generator = generator
        self.state = state

    def draw(self, count: int) -> list[Any]:
        state, picks = self.state, []
        while len(picks) < count:
            if state.position >= len(state.order):
                state.order = torch.randperm(len(self.items), generator=self.generator).tolist()
                state.position = 0
            picks.append(self.items[state.order[state.position]])
            state.position += 1
        return picks


# ---- checkpoints -------------------------------------------------------------------------


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


def make_accelerator(loop: LoopConfig, run_dir: Path) -> Accelerator:
    """The trainers' Accelerator: a GPU when there is one, the ``loop``'s mixed precision,
    gradient accumulation and trackers.

    DDP is told that some parameters may go unused in a step: DLR's projector in RL (only
    the warm start trains it), the heads of a loss switched off by a zero weight, LaSER's
    LM head with one latent step.
    """
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        # "none" rather than accelerate's "no", which YAML reads as false.
        mixed_precision="no" if loop.mixed_precision == "none" else loop.mixed_precision,
        log_with=loop.report_to or None,
        project_dir=str(run_dir),
        gradient_accumulation_steps=loop.gradient_accumulation_steps,
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
    ``micro_batches``: ``loop.gradient_accumulation_steps``)."""
    processes = accelerator.num_processes
    if count % (processes * micro_batches):
        accumulation = (
            f" x {micro_batches} micro-batches (loop.gradient_accumulation_steps)"
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


# ---- the recipe skeleton -----------------------------------------------------------------

LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
"""``loop.lr_schedule`` -> ``transformers.get_scheduler``'s name (each warms up linearly)."""
CHECKPOINTS_KEPT = 2


class Recipe:
    """What the training recipes share. A recipe reads top to bottom as ``setup()`` ->
    ``train()`` (its own explicit loop over ``state.step``) -> ``cleanup()`` and calls:

    - :meth:`open_run`, first in ``setup``: the Accelerator, the check that a step's batch
      splits evenly, the seeds and the run's generators;
    - :meth:`prepare_training`: AdamW and the loop's LR schedule, prepared by accelerate;
    - :meth:`start_or_resume`, last in ``setup``: the run folder and its ``config.yaml``,
      the latest checkpoint on ``--resume``, the metrics log and the trackers;
    - :meth:`progress_bar` and :meth:`end_step` in ``train``: the log, the bar and a
      checkpoint every ``loop.checkpoint_every`` steps;
    - :meth:`finish`, last in ``cleanup``: the curves, and the end of the accelerate run.

    A checkpoint holds the :class:`TrainState`, the optimiser, the LR scheduler, every
    random state and what the recipe's :meth:`save_parts` writes (its trained modules);
    :meth:`load_parts` reads them back.
    """

    name: ClassVar[str]
    """On the progress bar and the curves; the trackers' project is ``latentrl-<name>``."""
    curve_keys: ClassVar[tuple[str, ...]]
    """The metrics plotted in ``curves.png``."""

    def __init__(self, cfg: Any, resume: bool = False) -> None:
        self.cfg = cfg
        self.resume = resume
        self.run_dir = Path(cfg.output_dir)
        self.state = TrainState()
        self.generators: dict[str, torch.Generator] = {}

    def save_parts(self, folder: Path) -> None:
        """Write the recipe's trained modules into a checkpoint ``folder``."""
        raise NotImplementedError

    def load_parts(self, folder: Path) -> None:
        """Load what :meth:`save_parts` wrote into the recipe's modules."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the trained modules, the frozen models and each step's tensors live
        (accelerate's choice: a GPU when there is one)."""
        return self.accelerator.device

    # ---- setup ---------------------------------------------------------------------------

    def open_run(self, batch_key: str, items: str, generators: Mapping[str, int]) -> None:
        """The Accelerator of ``cfg.loop``; a :class:`ConfigError` unless the config's
        ``batch_key`` (a step's ``items``) splits evenly over the processes and micro-batches;
        the global seed, and the run's ``generators`` (name -> offset added to the seed)."""
        cfg = self.cfg
        self.accelerator = make_accelerator(cfg.loop, self.run_dir)
        require_even_split(
            self.accelerator, batch_key, getattr(cfg, batch_key), items,
            cfg.loop.gradient_accumulation_steps,
        )  # fmt: skip
        torch.manual_seed(cfg.seed)
        self.generators = {
            name: torch.Generator().manual_seed(cfg.seed + offset)
            for name, offset in generators.items()
        }

    def prepare_training(self, module: torch.nn.Module, params: Iterable[Any]) -> torch.nn.Module:
        """AdamW over ``params`` (tensors or parameter groups) at the loop's learning rate
        and weight decay, the loop's LR schedule, and ``module`` prepared by accelerate
        (returned: under several processes, its DDP wrapper)."""
        loop = self.cfg.loop
        optimizer = torch.optim.AdamW(params, lr=loop.learning_rate, weight_decay=loop.weight_decay)
        self.scheduler = get_scheduler(
            LR_SCHEDULES[loop.lr_schedule],
            optimizer,
            num_warmup_steps=loop.warmup_steps,
            num_training_steps=loop.steps,
        )
        prepared, self.optimizer = self.accelerator.prepare(module, optimizer)
        return prepared

    def start_or_resume(self) -> None:
        """The run folder with the config as run; on ``--resume`` the latest checkpoint;
        the metrics log (cut back to the checkpoint's step) and the trackers."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        resume_from = latest_checkpoint(self.run_dir) if self.resume else None
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        self.metrics = MetricsLog(
            self.run_dir, self.accelerator, self.state.step if resume_from else None
        )
        if self.cfg.loop.report_to:
            self.accelerator.init_trackers(f"latentrl-{self.name.lower()}", asdict(self.cfg))

    # ---- the loop ------------------------------------------------------------------------

    def progress_bar(self) -> tqdm:
        return tqdm(
            total=self.cfg.loop.steps,
            initial=self.state.step,
            desc=self.name,
            mininterval=1.0,
            disable=not self.accelerator.is_main_process,
        )

    def end_step(self, bar: tqdm, metrics: dict[str, float], **shown: str) -> None:
        """Log step ``state.step``'s ``metrics``, advance the ``bar`` (with ``shown`` beside
        it) and save a checkpoint every ``loop.checkpoint_every`` steps."""
        self.metrics.log(self.state.step, metrics)
        bar.update(1)
        bar.set_postfix(shown, refresh=False)  # redrawn at the bar's interval
        every = self.cfg.loop.checkpoint_every
        if every and self.state.step % every == 0:
            self.save_checkpoint()

    # ---- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """``checkpoint-NNNNNN/`` by the main process (None elsewhere): staged, renamed into
        place when complete, and the older ones pruned to the last two."""
        if not self.accelerator.is_main_process:
            return None
        final = self.run_dir / f"{CHECKPOINT_PREFIX}{self.state.step:06d}"
        with atomic_folder(final) as staging:
            self.save_parts(staging)
            training = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(self.generators),
            }
            torch.save(training, staging / TRAINING_STATE_NAME)
            (staging / STATE_NAME).write_text(json.dumps(asdict(self.state), indent=2))
        for old in list_checkpoints(self.run_dir)[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (on every process)."""
        saved = json.loads((folder / STATE_NAME).read_text())
        version = saved.get("format_version", 1)
        if version != STATE_FORMAT_VERSION:
            raise ConfigError(
                f"--resume: {folder} holds trainer state format {version}, and this latentrl "
                f"reads format {STATE_FORMAT_VERSION}; start the run again in a new output_dir"
            )
        self.load_parts(folder)
        # On the CPU: a GPU run's checkpoint resumes anywhere (the optimiser moves its state
        # to each parameter's device).
        training = torch.load(folder / TRAINING_STATE_NAME, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        set_rng_state(training["rng"], self.generators)
        # In place: the recipe's sampler holds this state.
        vars(self.state).update(asdict(TrainState(**saved)))

    # ---- end of run ----------------------------------------------------------------------

    def finish(self) -> None:
        """The curves, then the end of the accelerate run (trackers, process group)."""
        self.metrics.plot(self.curve_keys, f"{self.name} training")
        end_run(self.accelerator)
