"""Vision encoders: any ``transformers`` vision model, and tiny ones built offline for tests.

:class:`VisionEncoder` turns images into visual tokens ``[B, N, D]`` (one per patch; a
CLS token is dropped) and an image embedding ``[B, D]`` (the mean of the tokens). It loads a ViT, a CLIP or SigLIP model (their
vision tower) or any vision ``AutoModel`` folder with its image processor, frozen by
default.

No weights can be downloaded here, so :func:`pretrained_tiny_vit` builds a small ViT from
a config and pre-trains it for seconds on ``shapes_vqa`` scenes to predict each patch's
shape, colour, row and column (the grid cell is one patch), then caches the folder like
:func:`latentrl.models.tiny.pretrained_tiny_model`. :func:`pretrained_vqa_language_model`
does the same for a tiny language model that has read the task's questions and answers
(without the images: it knows the answer vocabulary and priors, nothing about a scene).

>>> encoder = VisionEncoder.from_pretrained(pretrained_tiny_vit())  # doctest: +SKIP
>>> tokens, pooled = encoder(images)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, ViTConfig, ViTImageProcessor, ViTModel

from latentrl.config import PretrainConfig, TinyModelConfig, require_positive
from latentrl.io import atomic_folder
from latentrl.models.tiny import (
    build_tiny_model,
    default_cache_dir,
    latent_slot_prompt,
    pretrain,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

# Bump when the way tiny vision models (or VQA language models) are built changes.
TINY_VISION_FORMAT_VERSION = 1
PATCH_TARGETS = ("shape", "colour", "row", "col")
"""What the tiny ViT learns to name for each patch."""


class VisionEncoder(nn.Module):
    """Images -> (visual tokens [B, N, D], image embedding [B, D]); frozen unless told."""

    def __init__(self, model: nn.Module, processor, frozen: bool = True) -> None:
        super().__init__()
        # CLIPModel / SiglipModel hold the image tower as .vision_model.
        self.model = getattr(model, "vision_model", model)
        self.processor = processor
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False).eval()
        self.hidden_size = self.model.config.hidden_size

    @classmethod
    def from_pretrained(cls, path: str | Path, frozen: bool = True) -> VisionEncoder:
        model = AutoModel.from_pretrained(path)
        return cls(model, AutoImageProcessor.from_pretrained(path), frozen=frozen)

    def forward(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        with torch.set_grad_enabled(not self.frozen and torch.is_grad_enabled()):
            out = self.model(pixel_values=pixels.to(device))
        tokens = out.last_hidden_state
        config = self.model.config
        patches = (config.image_size // config.patch_size) ** 2
        if tokens.shape[1] == patches + 1:  # ViT and CLIP put a CLS token first
            tokens = tokens[:, 1:]
        # The mean of the tokens, not pooler_output: a ViT folder loaded by AutoModel gets a
        # freshly initialised pooler, and the mean means the same thing for every model.
        return tokens, tokens.mean(dim=1)

    @torch.no_grad()
    def encode_all(
        self, images: Sequence[Any], batch_size: int = 256, progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of many images in batches (a frozen encoder's are computed once a run)."""
        tokens, pooled = [], []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="visual features", disable=not progress):
            t, p = self(images[start : start + batch_size])
            tokens.append(t)
            pooled.append(p)
        return torch.cat(tokens), torch.cat(pooled)


@dataclass
class TinyViTConfig:
    """A tiny ViT for ``shapes_vqa`` and its per-patch attribute pre-training."""

    image_size: int = 32
    patch_size: int = 8
    """Equal to the scene's grid cell, so one patch sees one whole object."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    pretrain_steps: int = 300
    pretrain_batch_size: int = 64
    pretrain_examples: int = 4000
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(
            self, "image_size", "patch_size", "hidden_size", "num_layers", "num_heads",
            "pretrain_steps", "pretrain_batch_size", "pretrain_examples", "learning_rate",
        )  # fmt: skip
        if self.image_size % self.patch_size:
            raise ValueError("patch_size: must divide image_size")


def _cached_build(kind: str, settings: dict, build: Callable[[Path], dict], cache_dir) -> Path:
    """The folder ``build(staging)`` writes, keyed by ``settings``; built once, atomically."""
    settings = {"format_version": TINY_VISION_FORMAT_VERSION, **settings}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / "tiny" / f"{kind}-{key}"
    if (folder / "latentrl_tiny.json").is_file():
        return folder
    started = time.perf_counter()
    with atomic_folder(folder) as staging:
        record = {**settings, **build(staging), "seconds": round(time.perf_counter() - started, 1)}
        (staging / "latentrl_tiny.json").write_text(json.dumps(record, indent=2))
    logger.info("%s cached at %s", kind, folder)
    return folder


def pretrained_tiny_vit(
    cfg: TinyViTConfig | None = None,
    task_options: dict | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Folder of a tiny ViT pre-trained to name each patch's shape, colour, row and column
    (cached)."""
    from latentrl.tasks import get_task
    from latentrl.tasks.shapes_vqa import COLOURS, SHAPES

    cfg = cfg or TinyViTConfig()
    task_options = dict(task_options or {})

    def build(staging: Path) -> dict:
        rows = get_task("shapes_vqa", kind="vqa").load(
            "train", limit=cfg.pretrain_examples, **task_options
        )
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
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        return {"final_patch_accuracy": round(accuracy, 4)}

    return _cached_build(
        "vit-shapes",
        {
            "vit": asdict(cfg),
            "task_options": task_options,
            "task_version": get_task("shapes_vqa", kind="vqa").version,
            "targets": PATCH_TARGETS,
        },
        build,
        cache_dir,
    )


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
    from latentrl.tasks import get_task

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
        tokenizer = train_tokenizer((p + t for p, t in examples), model_cfg.vocab_size)
        model = build_tiny_model(tokenizer, model_cfg)
        losses = pretrain(model, tokenizer, examples, pretrain_cfg, progress=progress)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        return {"final_loss": sum(losses[-20:]) / len(losses[-20:])}

    settings = {
        "task": task_name,
        "task_options": task_options,
        "task_version": get_task(task_name, kind="vqa").version,
        "model": asdict(model_cfg),
        "pretrain": asdict(pretrain_cfg),
        "thought_rate": thought_rate,
    }
    return _cached_build(f"lm-{task_name}", settings, build, cache_dir)
