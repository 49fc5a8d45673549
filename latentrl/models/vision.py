"""Vision encoders: any ``transformers`` vision model, and tiny ones built offline for tests.

:class:`VisionEncoder` turns images into visual tokens ``[B, N, D]`` (one per patch; a
CLS token is dropped) and an image embedding ``[B, D]`` (the mean of the tokens). It loads a ViT, a CLIP or SigLIP model (their
vision tower) or any vision ``AutoModel`` folder with its image processor, frozen by
default.

No weights can be downloaded here, so :class:`TinyViTConfig` shapes a small ViT that
:func:`latentrl.pretrained.pretrained_tiny_vit` pre-trains on ``shapes_vqa`` scenes.

>>> encoder = VisionEncoder.from_pretrained(pretrained_tiny_vit())  # doctest: +SKIP
>>> tokens, pooled = encoder(images)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel

logger = logging.getLogger(__name__)


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
