"""CoCoVa's Latent Q-Former: a chain of continuous thoughts refined against the image.

The LQ-Former holds M learnable queries (BLIP-2 style). One refinement step runs a block
shared by all steps: the queries self-attend together with the question's tokens, then
cross-attend to the currently selected visual tokens, then an MLP; its output minus its
input is the update ``delta``. The thought chain is

    z_0 = queries,   z_k = z_{k-1} + tanh(alpha) * delta_k,   k = 1..K

with ``alpha`` a learnable gate that starts at 0, so an untrained LQ-Former passes the
queries through unchanged and the gate opens as training finds the updates useful.

**Counting** needs two things softmax attention alone lacks. A learned *null key* (an
attention sink, ``attention_sink``): a query that finds no matching token attends to it,
and one whose matches score as the null does puts n/(n+1) of its attention on n of them,
so "none" and "how many" become expressible. *Position codes* (``position_codes``): fixed
2-D sine-cosine codes of each visual token's row and column (as MAE's) are added to the
tokens, so a query that has read the reference shape's column can score "the columns left
of it" with a linear map.

**Token selection**: the queries' cross-attention over the visual tokens at step k ranks
the tokens (mean over heads and queries); the top ``keep_fraction`` of them are the only
ones step k + 1 attends to (:func:`select_tokens`).

**Early stop** (evaluation only): a question stops refining once its update is small,
``||tanh(alpha) * delta_k|| <= early_stop * ||z_{k-1}||``; the iterations each question used
are returned and reported.

:class:`CoCoVaPlugin` wraps the LQ-Former with the input projections, the projector of z_K
into the language model's embedding space (the DLR :class:`Projector`), and the modules of
CoCoVa's auxiliary losses (contrastive heads, denoiser). With ``architecture: llava`` it is
the baseline without latent thoughts: the visual tokens are projected straight into the
language model. A plugin folder holds ``cocova.json`` and ``weights.safetensors``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from latentrl.config import LQFormerSettings
from latentrl.io import atomic_folder
from latentrl.losses.cocova import ConditionalDenoiser, CrossModalContrast
from latentrl.models.latent_plugin import Projector

PLUGIN_CONFIG_NAME = "cocova.json"
WEIGHTS_NAME = "weights.safetensors"


def num_kept(num_tokens: int, keep_fraction: float) -> int:
    """How many of ``num_tokens`` a selection keeps: round(fraction * n), at least one."""
    return max(1, round(keep_fraction * num_tokens))


def select_tokens(
    tokens: torch.Tensor, scores: torch.Tensor, keep_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The highest-scoring tokens [B, n_kept, D] of ``tokens`` [B, N, D] and their indices
    [B, n_kept] (best first), for ``scores`` [B, N] (the queries' attention)."""
    indices = scores.topk(num_kept(tokens.shape[1], keep_fraction), dim=1).indices
    return tokens.gather(1, indices[..., None].expand(-1, -1, tokens.shape[-1])), indices


def grid_position_codes(num_tokens: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine codes [num_tokens, width] of tokens laid out row-major on a
    square grid: the first half of each code encodes the row, the second the column."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"position_codes: {num_tokens} visual tokens are not a square grid "
            "(set plugin.position_codes=false)"
        )
    frequencies = 1.0 / 10000 ** (torch.arange(width // 4) / (width // 4))
    cells = torch.arange(num_tokens)

    def codes(positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None].float() * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([codes(cells // side), codes(cells % side)], dim=1)


class LQFormerBlock(nn.Module):
    """One refinement step: self-attention with the question, cross-attention to vision, MLP."""

    def __init__(self, width: int, num_heads: int, attention_sink: bool = True) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.norm_text = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(width)
        self.norm_visual = nn.LayerNorm(width)
        # add_bias_kv appends a learned key and value to the visual tokens: the null key.
        self.cross_attn = nn.MultiheadAttention(
            width, num_heads, batch_first=True, add_bias_kv=attention_sink
        )
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(
        self, z: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update ``delta`` [B, M, W] and the queries' attention over ``visual`` [B, M, N]
        (without the null key's share: with an attention sink it sums to at most 1)."""
        q = self.norm_self(z)
        context = torch.cat([q, self.norm_text(text)], dim=1)
        query_pad = torch.zeros(z.shape[:2], dtype=torch.bool, device=z.device)
        h = (
            z
            + self.self_attn(
                q, context, context, key_padding_mask=torch.cat([query_pad, text_pad], dim=1)
            )[0]
        )
        v = self.norm_visual(visual)
        attended, attention = self.cross_attn(self.norm_cross(h), v, v)  # heads averaged
        h = h + attended
        h = h + self.mlp(self.norm_mlp(h))
        return h - z, attention[..., : visual.shape[1]]


class Thoughts(NamedTuple):
    """What the LQ-Former produced for a batch."""

    latents: torch.Tensor  # [B, M, W] z_K
    iterations: torch.Tensor  # [B] refinement steps each question used
    kept: list[torch.Tensor]  # per step after the first: [B, n_kept] indices into the tokens
    update_sizes: list[float]  # per step: mean ||tanh(alpha) * delta_k|| / ||z_{k-1}|| (detached)
    attention: list[torch.Tensor]  # per step: [B, N] the queries' mean attention over all the
    # tokens (0 on the tokens that step no longer sees; detached)


class LQFormer(nn.Module):
    """M learnable queries refined K times against the question and the visual tokens."""

    def __init__(self, settings: LQFormerSettings) -> None:
        super().__init__()
        self.settings = settings
        self.queries = nn.Parameter(torch.randn(settings.num_queries, settings.width) * 0.02)
        self.block = LQFormerBlock(settings.width, settings.num_heads, settings.attention_sink)
        self.gate = nn.Parameter(torch.zeros(()))  # alpha: tanh(0) = 0 closes the update

    def forward(self, visual: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor) -> Thoughts:
        """``visual`` [B, N, W] and ``text`` [B, L, W] (``text_pad`` [B, L] True at padding)."""
        settings = self.settings
        batch = visual.shape[0]
        z = self.queries.expand(batch, -1, -1)
        active = torch.ones(batch, dtype=torch.bool, device=visual.device)
        iterations = torch.zeros(batch, dtype=torch.long, device=visual.device)
        num_tokens = visual.shape[1]
        token_ids = torch.arange(num_tokens, device=visual.device).expand(batch, -1)
        kept, update_sizes, attention_maps = [], [], []
        for step in range(settings.iterations):
            delta, attention = self.block(z, text, text_pad, visual)
            scores = attention.mean(dim=1).detach()  # [B, n]
            attention_maps.append(scores.new_zeros(batch, num_tokens).scatter(1, token_ids, scores))
            update = torch.tanh(self.gate) * delta
            # What a step changes, relative to the thoughts it refines: the gate alone says
            # little, since the block can scale delta up as the gate stays small.
            with torch.no_grad():
                relative = update.norm(dim=-1) / z.norm(dim=-1).clamp(min=1e-8)
                update_sizes.append(relative[active].mean().item())
            z = torch.where(active[:, None, None], z + update, z)
            iterations = iterations + active.long()
            if settings.early_stop > 0 and not self.training:
                size = update.flatten(1).norm(dim=1)
                active = active & (size > settings.early_stop * z.flatten(1).norm(dim=1))
                if not active.any():
                    break
            if settings.token_selection and step + 1 < settings.iterations:
                visual, picked = select_tokens(
                    visual, attention.mean(dim=1), settings.keep_fraction
                )
                token_ids = token_ids.gather(1, picked)
                kept.append(token_ids)
        return Thoughts(z, iterations, kept, update_sizes, attention_maps)


@dataclass
class CoCoVaPluginConfig:
    """Everything needed to rebuild a plugin; saved as ``cocova.json``."""

    language_model: str
    vision_encoder: str
    lm_hidden_size: int
    visual_dim: int
    target_rms: float
    """RMS of the language model's token embeddings (the projector's output scale)."""
    settings: LQFormerSettings = field(default_factory=LQFormerSettings)
    answer_cue: str = "Answer:"
    extra: dict = field(default_factory=dict)


class PluginOutput(NamedTuple):
    embeds: torch.Tensor  # [B, T, H] vectors spliced into the LM input (T = M, or N for llava)
    latents: torch.Tensor | None  # [B, M, W] z_K (None for llava)
    iterations: torch.Tensor  # [B]
    kept: list[torch.Tensor]
    update_sizes: list[float]  # per LQ-Former step (empty for llava)
    attention: list[torch.Tensor]  # per step [B, N] (empty for llava), see :class:`Thoughts`


class CoCoVaPlugin(nn.Module):
    """Visual tokens + question embeddings -> vectors for the language model's latent slot."""

    def __init__(self, config: CoCoVaPluginConfig) -> None:
        super().__init__()
        self.config = config
        s = config.settings
        if s.architecture == "llava":
            self.projector = Projector(
                config.visual_dim, config.lm_hidden_size, "mlp", config.target_rms
            )
            return
        self.visual_in = nn.Linear(config.visual_dim, s.width)
        self.text_in = nn.Linear(config.lm_hidden_size, s.width)
        self.lqformer = LQFormer(s)
        # As BLIP-2 normalises its Q-Former's output: while the gate is nearly closed the
        # image-dependent part of z_K is small next to the shared queries, and the norm
        # keeps it from vanishing under the projector's bias.
        self.output_norm = nn.LayerNorm(s.width)
        self.projector = Projector(s.width, config.lm_hidden_size, s.projector, config.target_rms)
        self.contrast = CrossModalContrast(
            s.width, config.visual_dim, config.lm_hidden_size, s.contrast_dim
        )
        self.denoiser = ConditionalDenoiser(
            config.visual_dim, s.width, s.denoiser_width, s.num_heads
        )

    def forward(
        self, visual: torch.Tensor, text_embeds: torch.Tensor, text_pad: torch.Tensor
    ) -> PluginOutput:
        """``visual`` [B, N, D_v] tokens; ``text_embeds`` [B, L, H] the question's LM embeddings."""
        if self.config.settings.architecture == "llava":
            no_steps = torch.zeros(visual.shape[0], dtype=torch.long, device=visual.device)
            return PluginOutput(self.projector(visual), None, no_steps, [], [], [])
        tokens = self.visual_in(visual)
        if self.config.settings.position_codes:
            tokens = tokens + grid_position_codes(*tokens.shape[1:]).to(tokens)
        thoughts = self.lqformer(tokens, self.text_in(text_embeds), text_pad)
        embeds = self.projector(self.output_norm(thoughts.latents))
        return PluginOutput(
            embeds, thoughts.latents, thoughts.iterations, thoughts.kept, thoughts.update_sizes,
            thoughts.attention,
        )  # fmt: skip

    # ---- saving and loading ----------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        with atomic_folder(folder) as staging:
            config = asdict(self.config)
            (staging / PLUGIN_CONFIG_NAME).write_text(json.dumps(config, indent=2))
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, staging / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CoCoVaPlugin:
        folder = Path(folder)
        path = folder / PLUGIN_CONFIG_NAME
        if not path.is_file():
            raise ValueError(f"{folder}: not a CoCoVa plugin folder (no {PLUGIN_CONFIG_NAME})")
        try:
            data = json.loads(path.read_text())
            data["settings"] = LQFormerSettings(**data.get("settings", {}))
            config = CoCoVaPluginConfig(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid plugin config: {err}") from None
        plugin = cls(config)
        plugin.load_state_dict(load_file(folder / WEIGHTS_NAME))
        return plugin.eval()


def pooled(latents: torch.Tensor) -> torch.Tensor:
    """One vector per question from its thought chain [B, M, W] -> [B, W]."""
    return latents.mean(dim=1)
