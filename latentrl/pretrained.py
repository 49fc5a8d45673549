"""Tiny models pre-trained on a task's data, built offline and cached: the layer that
puts ``latentrl.models`` (architectures, tokenizer, pre-training loop) and
``latentrl.tasks`` (the data) together, so that neither imports the other.

No machine here can download weights, so tests, benchmarks and the demo run on models built
from a config and made competent on a task by a short supervised run. They are ordinary
Hugging Face folders that ``transformers`` and vLLM both load, so the same code path serves
a user's real checkpoint. Each is cached under ``$LATENTRL_CACHE/tiny`` keyed by every
setting that shaped it:

>>> path = pretrained_tiny_model("arith")  # doctest: +SKIP
>>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP

- :func:`pretrained_tiny_model`: a small Qwen2 causal LM on a text task;
- :func:`pretrained_tiny_vit`: a small ViT pre-trained on ``shapes_vqa`` scenes to name
  each patch's shape, colour, row and column (the grid cell is one patch);
- :func:`pretrained_vqa_language_model`: a tiny LM that has read a VQA task's questions and
  answers (without the images: it knows the answer vocabulary and priors, nothing about a
  scene).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from latentrl.config import PretrainConfig, TinyModelConfig, TinyViTConfig
from latentrl.io import atomic_folder, cache_key, default_cache_dir
from latentrl.models.tiny import (
    build_tiny_model,
    latent_slot_prompt,
    pretrain,
    pretraining_examples,
    train_tokenizer,
)
from latentrl.tasks import get_task
from latentrl.tasks.shapes_vqa import COLOURS, SHAPES

logger = logging.getLogger(__name__)

# Bump when the way tiny models are built or trained changes, so caches are rebuilt.
TINY_FORMAT_VERSION = 1
# Bump when the way tiny vision models (or VQA language models) are built changes.
TINY_VISION_FORMAT_VERSION = 1
PATCH_TARGETS = ("shape", "colour", "row", "col")
"""What the tiny ViT learns to name for each patch."""


def cached_folder(
    kind: str, settings: dict, build: Callable[[Path], dict], cache_dir: str | Path | None
) -> Path:
    """``CACHE/tiny/KIND-KEY``, the folder ``build(staging)`` writes, keyed by every setting
    that shapes it (a format version among them); built once, atomically, so an
    interrupted build never leaves a half-written model behind. ``latentrl_tiny.json``
    records the settings and what ``build`` returns.

    The build runs on a fork of torch's global random state: a run that builds the
    folder then draws the same numbers as one that finds it cached."""
    key = cache_key(settings)
    folder = Path(cache_dir or default_cache_dir()) / "tiny" / f"{kind}-{key}"
    if (folder / "latentrl_tiny.json").is_file():
        return folder
    started = time.perf_counter()
    with atomic_folder(folder) as staging, torch.random.fork_rng(devices=[]):
        record = {**settings, **build(staging), "seconds": round(time.perf_counter() - started, 1)}
        (staging / "latentrl_tiny.json").write_text(json.dumps(record, indent=2))
    logger.info("%s cached at %s (%s)", kind, folder, record)
    return folder


def _train_tiny_vit(
    rows: list[dict], cfg: TinyViTConfig, progress: bool
) -> tuple[ViTModel, ViTImageProcessor, float]:
    """A tiny ViT trained to name each patch's ``PATCH_TARGETS``: (model, processor, the
    last step's mean patch accuracy)."""
    torch.manual_seed(cfg.seed)
    config = ViTConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=4 * cfg.hidden_size,
    )
    processor = ViTImageProcessor(
        size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    model = ViTModel(config, add_pooling_layer=False)
    side = cfg.image_size // cfg.patch_size
    heads = nn.ModuleDict(
        {
            "shape": nn.Linear(cfg.hidden_size, len(SHAPES) + 1),
            "colour": nn.Linear(cfg.hidden_size, len(COLOURS) + 1),
            # Row and column too: relations need positions the attribute heads don't.
            "row": nn.Linear(cfg.hidden_size, side),
            "col": nn.Linear(cfg.hidden_size, side),
        }
    )
    pixels = processor(images=[r["image"] for r in rows], return_tensors="pt")["pixel_values"]
    cells = torch.arange(side * side).expand(len(rows), -1)
    labels = {
        "shape": torch.tensor([r["patch_shapes"] for r in rows]),
        "colour": torch.tensor([r["patch_colours"] for r in rows]),
        "row": cells // side,
        "col": cells % side,
    }
    params = [*model.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    generator = torch.Generator().manual_seed(cfg.seed)
    accuracy = 0.0
    bar = tqdm(range(cfg.pretrain_steps), desc="pre-training tiny ViT", disable=not progress)
    for _ in bar:
        picks = torch.randint(len(rows), (cfg.pretrain_batch_size,), generator=generator)
        tokens = model(pixel_values=pixels[picks]).last_hidden_state[:, 1:]
        loss = 0.0
        correct = []
        for name, head in heads.items():
            logits = head(tokens)
            loss = loss + nn.functional.cross_entropy(
                logits.flatten(0, 1), labels[name][picks].flatten()
            )
            correct.append((logits.argmax(-1) == labels[name][picks]).float().mean().item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        accuracy = sum(correct) / len(correct)
        bar.set_postfix(loss=f"{loss.item():.3f}", patch_acc=f"{accuracy:.3f}")
    return model, processor, accuracy


def pretrained_tiny_vit(
    cfg: TinyViTConfig | None = None,
    task_options: dict | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Folder of a tiny ViT pre-trained to name each patch's shape, colour, row and column
    (cached)."""
    cfg = cfg or TinyViTConfig()
    task_options = dict(task_options or {})

    def build(staging: Path) -> dict:
        rows = get_task("shapes_vqa", kind="vqa").load(
            "train", limit=cfg.pretrain_examples, **task_options
        )
        model, processor, accuracy = _train_tiny_vit(rows, cfg, progress)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        return {"final_patch_accuracy": round(accuracy, 4)}

    return cached_folder(
        "vit-shapes",
        {
            "format_version": TINY_VISION_FORMAT_VERSION,
            "vit": asdict(cfg),
            "task_options": task_options,
            "task_version": get_task("shapes_vqa", kind="vqa").version,
            "targets": PATCH_TARGETS,
        },
        build,
        cache_dir,
    )


def _train_tiny_lm(
    examples: list[tuple[str, str]],
    model_cfg: TinyModelConfig,
    pretrain_cfg: PretrainConfig,
    staging: Path,
    progress: bool,
) -> dict:
    """A tokenizer trained on ``(prompt, target)`` examples, a tiny LM pre-trained on them,
    both saved to ``staging``; returns the final loss for the cache record."""
    tokenizer = train_tokenizer((p + t for p, t in examples), model_cfg.vocab_size)
    model = build_tiny_model(tokenizer, model_cfg)
    losses = pretrain(model, tokenizer, examples, pretrain_cfg, progress=progress)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return {"final_loss": sum(losses[-20:]) / len(losses[-20:])}


def pretrained_vqa_language_model(
    task_name: str = "shapes_vqa",
    task_options: dict | None = None,
    model_cfg: TinyModelConfig | None = None,
    pretrain_cfg: PretrainConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    thought_rate: float = 0.0,
) -> Path:
    """A tiny causal LM taught ``prompt <|latent_start|>...<|latent_end|>Answer: answer``
    on a VQA task's text (cached); it never sees an image.

    With ``thought_rate`` 0 the slot is always empty: the LM learns the answer vocabulary
    and the question-only prior, and then ignores the slot (measured: random vectors there
    leave its loss unchanged, so no gradient reaches a plugin). Above 0, that fraction of
    examples holds the row's worked ``thought`` in the slot (``shapes_vqa`` rows have one),
    so the LM learns to read the slot, as DLR's thought-literate main model does; what the
    image shows still reaches it only through the slot."""
    task_options = dict(task_options or {})
    model_cfg = model_cfg or TinyModelConfig()
    pretrain_cfg = pretrain_cfg or PretrainConfig()

    def build(staging: Path) -> dict:
        rows = get_task(task_name, kind="vqa").load(
            "train", limit=pretrain_cfg.num_examples, **task_options
        )
        generator = torch.Generator().manual_seed(pretrain_cfg.seed)
        shown = (torch.rand(len(rows), generator=generator) < thought_rate).tolist()
        examples = [
            (
                latent_slot_prompt(
                    r["prompt"], pretrain_cfg.answer_cue, r["thought"] if show else ""
                ),
                " " + r["answer"],
            )
            for r, show in zip(rows, shown, strict=True)
        ]
        return _train_tiny_lm(examples, model_cfg, pretrain_cfg, staging, progress)

    settings = {
        "format_version": TINY_VISION_FORMAT_VERSION,
        "task": task_name,
        "task_options": task_options,
        "task_version": get_task(task_name, kind="vqa").version,
        "model": asdict(model_cfg),
        "pretrain": asdict(pretrain_cfg),
        "thought_rate": thought_rate,
    }
    return cached_folder(f"lm-{task_name}", settings, build, cache_dir)


def pretrained_tiny_model(
    task_name: str = "arith",
    task_options: dict | None = None,
    model_cfg: TinyModelConfig | None = None,
    pretrain_cfg: PretrainConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Folder of a tiny model pre-trained on a text task's train split (cached, keyed by
    the task, its options and both configs)."""
    task_options = dict(task_options or {})
    model_cfg = model_cfg or TinyModelConfig()
    pretrain_cfg = pretrain_cfg or PretrainConfig()
    settings = {
        "format_version": TINY_FORMAT_VERSION,
        "task": task_name,
        "task_options": task_options,
        "model": asdict(model_cfg),
        "pretrain": asdict(pretrain_cfg),
    }

    def build(staging: Path) -> dict:
        task = get_task(task_name)
        rows = task.load("train", limit=pretrain_cfg.num_examples, **task_options)
        examples = pretraining_examples(task, rows, pretrain_cfg)
        return _train_tiny_lm(examples, model_cfg, pretrain_cfg, staging, progress)

    return cached_folder(Path(task_name).stem, settings, build, cache_dir)
