"""CoCoVa's auxiliary losses: cross-modal InfoNCE and diffusion reconstruction.

Both keep the latent thoughts grounded: the contrastive terms pull a question's pooled
thoughts towards its own image and its own question text and away from the others in the
batch; the reconstruction term asks a small denoiser, conditioned on the final thoughts,
to predict the noise added to the visual features (DDPM's epsilon prediction), which it
can only do well if the thoughts carry what the image shows.

>>> a = torch.eye(3)
>>> round(symmetric_infonce(a, a, torch.tensor(math.log(10.0))).item(), 4)
0.0001
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def symmetric_infonce(a: Tensor, b: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE between row-paired embeddings ``a`` [B, D] and ``b`` [B, D].

    Cosine similarities times ``exp(logit_scale)``; the cross-entropy of finding row i's
    partner among the batch, averaged over both directions (a -> b and b -> a).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"symmetric_infonce: expected two [B, D] tensors, got {a.shape} and {b.shape}"
        )
    logits = logit_scale.exp() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    targets = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class CrossModalContrast(nn.Module):
    """Pooled thoughts vs image embedding and pooled thoughts vs question embedding.

    Each input gets a linear head into a shared ``dim``-wide space; the temperature is
    learnable (CLIP's ``logit_scale``, starting at 1/0.07 and capped at 100).
    """

    MAX_LOGIT_SCALE = math.log(100.0)

    def __init__(
        self, latent_dim: int, image_dim: int, text_dim: int, dim: int, temperature: float = 0.07
    ) -> None:
        super().__init__()
        self.latent_head = nn.Linear(latent_dim, dim)
        self.image_head = nn.Linear(image_dim, dim)
        self.text_head = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(
        self, pooled_latents: Tensor, image_embeds: Tensor, text_embeds: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        scale = self.logit_scale.clamp(max=self.MAX_LOGIT_SCALE)
        z = self.latent_head(pooled_latents)
        image = symmetric_infonce(z, self.image_head(image_embeds), scale)
        text = symmetric_infonce(z, self.text_head(text_embeds), scale)
        stats = {
            "infonce_image": image.item(),
            "infonce_text": text.item(),
            "temperature": 1.0 / scale.exp().item(),
        }
        return image + text, stats


class NoiseSchedule:
    """DDPM's linear beta schedule: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``."""

    def __init__(
        self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> None:
        if num_steps <= 0 or not 0 < beta_start <= beta_end < 1:
            raise ValueError("NoiseSchedule: need num_steps > 0 and 0 < beta_start <= beta_end < 1")
        self.num_steps = num_steps
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - betas, dim=0).float()  # [T]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x0`` and ``noise`` [B, ...], timesteps ``t`` [B] -> ``x_t``."""
        abar = self.alpha_bar.to(x0.device)[t].view(-1, *[1] * (x0.dim() - 1))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def diffusion_noise(
    schedule: NoiseSchedule, shape: Sequence[int], generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One uniformly drawn timestep per example [B] and standard-normal noise ``shape`` [B, ...]."""
    t = torch.randint(schedule.num_steps, (shape[0],), generator=generator)
    return t, torch.randn(tuple(shape), generator=generator)


def diffusion_loss(
    denoiser: nn.Module,
    x0: Tensor,
    condition: Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    noise: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Epsilon-prediction MSE at one uniformly drawn timestep per example.

    ``denoiser(x_t, t, condition)`` predicts the noise in ``x_t`` [B, N, D]; ``condition``
    [B, M, W] are the final latent thoughts. ``noise``: the timesteps and noise of
    :func:`diffusion_noise`, drawn here from ``generator`` when None.
    """
    t, eps = noise if noise is not None else diffusion_noise(schedule, x0.shape, generator)
    t, eps = t.to(x0.device), eps.to(x0.device)
    predicted = denoiser(schedule.add_noise(x0, eps, t), t, condition)
    return F.mse_loss(predicted, eps)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConditionalDenoiser(nn.Module):
    """A one-block transformer: noisy visual tokens + timestep attend to the thoughts."""

    def __init__(self, visual_dim: int, condition_dim: int, width: int, num_heads: int) -> None:
        super().__init__()
        self.width = width
        self.inp = nn.Linear(visual_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.condition = nn.Linear(condition_dim, width)
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )
        self.out = nn.Linear(width, visual_dim)

    def forward(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        h = self.inp(x_t) + self.time(timestep_embedding(t, self.width))[:, None]
        c = self.condition(condition)
        h = h + self.attn(self.norm(h), c, c)[0]
        h = h + self.mlp(h)
        return self.out(h)
