"""DLR's latent plugin: assistant policy + Gaussian latent head + projector + value head.

The assistant (any causal LM, optionally LoRA-adapted) reads ``question`` followed by N
``<|latent|>`` placeholders; its last hidden states at those positions give a diagonal
Gaussian over z in R^{N x d_z} (exact log-probabilities, reparameterised samples). The
projector maps z into the frozen main model's embedding space at the scale of its token
embeddings, and :func:`build_prompt_embeds` splices the vectors into the main model's
input between latent markers, before the answer cue.

A plugin folder is saved and loaded like a PEFT adapter::

    plugin/
      latent_plugin.json     # LatentPluginConfig: the main model it was trained for, sizes
      heads.safetensors      # latent head, projector, value head
      assistant/             # the assistant: a PEFT adapter folder, or a full model
      tokenizer files        # the assistant's tokenizer (with the latent tokens)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from latentrl.config import ConfigError, LatentPluginSettings
from latentrl.io import atomic_folder
from latentrl.models.named import prepared_folder, resolve_model
from latentrl.models.tokens import (
    LATENT_END_TOKEN,
    LATENT_START_TOKEN,
    LATENT_TOKEN,
    split_answer_cue,
)

PLUGIN_CONFIG_NAME = "latent_plugin.json"
HEADS_NAME = "heads.safetensors"


@dataclass
class LatentPluginConfig:
    """Everything needed to rebuild a plugin; saved as ``latent_plugin.json``."""

    main_model: str
    """The frozen main model the plugin was trained for (folder or Hub id)."""
    main_hidden_size: int
    assistant_model: str
    """The assistant's base model (folder or Hub id)."""
    settings: LatentPluginSettings = field(default_factory=LatentPluginSettings)
    extra: dict = field(default_factory=dict)
    """Free-form record: the training config and metrics at save time."""

    @classmethod
    def from_json(cls, path: Path) -> LatentPluginConfig:
        try:
            data = json.loads(path.read_text())
            data["settings"] = LatentPluginSettings(**data.get("settings", {}))
            config = cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: invalid plugin config: {err}") from None
        if (
            config.settings.projector == "none"
            and config.settings.latent_dim != config.main_hidden_size
        ):
            raise ValueError(f"{path}: projector none needs latent_dim == main_hidden_size")
        return config


class LatentDistribution(NamedTuple):
    """A diagonal Gaussian over the latents of a batch of questions."""

    mean: torch.Tensor  # [B, N, d_z]
    log_std: torch.Tensor  # [B, N, d_z]
    features: torch.Tensor  # [B, h_a] mean placeholder state, input of the value head


class Projector(nn.Module):
    """z [.., N, d_z] -> main-model input vectors [.., N, H].

    The output is RMS-normalised per vector and multiplied by a learnable scale that
    starts at ``projector_scale`` times the RMS of the main model's token embeddings, so
    injected vectors are neither drowned out by nor overwhelm the real tokens. A small
    random projection (not zero: the latent log-prob gives the projector no gradient, so
    a zero projector is a closed channel) keeps z's information flowing from step one.
    """

    def __init__(self, latent_dim: int, hidden_size: int, kind: str, target_rms: float) -> None:
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(latent_dim, hidden_size)
        elif kind == "none":
            if latent_dim != hidden_size:
                raise ValueError(
                    f"projector none: latent_dim {latent_dim} must equal the main model's "
                    f"hidden size {hidden_size}"
                )
            self.net = nn.Identity()
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(latent_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
            )
        else:
            raise ValueError(f"projector: unknown kind {kind!r} (linear, mlp or none)")
        self.log_scale = nn.Parameter(torch.tensor(math.log(target_rms)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        rms = out.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()
        return out / rms * self.log_scale.exp()


class LatentPlugin(nn.Module):
    """Assistant policy over latents, their projector into the main model, and a value head."""

    def __init__(
        self, config: LatentPluginConfig, assistant: nn.Module, tokenizer, target_rms: float
    ) -> None:
        super().__init__()
        self.config = config
        settings = config.settings
        self.settings = settings
        self.assistant = assistant
        self.tokenizer = tokenizer
        self.latent_token_id = tokenizer.convert_tokens_to_ids(LATENT_TOKEN)
        hidden = assistant.config.hidden_size
        self.latent_head = nn.Linear(hidden, 2 * settings.latent_dim)
        with torch.no_grad():
            self.latent_head.weight.mul_(0.1)
            self.latent_head.bias.zero_()
        # log_std = low + (high - low) * sigmoid(raw + offset): a smooth squash keeps it in
        # bounds without killing its gradient, and the offset makes raw = 0 give init_log_std.
        low, high = settings.log_std_min, settings.log_std_max
        self._log_std_offset = _logit((settings.init_log_std - low) / (high - low))
        self.projector = Projector(
            settings.latent_dim, config.main_hidden_size, settings.projector,
            target_rms * settings.projector_scale,
        )  # fmt: skip
        flat = settings.num_latents * settings.latent_dim
        self.value_head = nn.Sequential(nn.Linear(hidden + flat, 128), nn.GELU(), nn.Linear(128, 1))

    # ---- the policy ------------------------------------------------------------------

    def encode_questions(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] (left-padded) and mask of ``question + N placeholders``."""
        placeholders = [self.latent_token_id] * self.settings.num_latents
        rows = [
            self.tokenizer(q, add_special_tokens=False)["input_ids"] + placeholders
            for q in questions
        ]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return input_ids, mask

    def distribution(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> LatentDistribution:
        """The policy pi(z | question) for a batch of encoded questions."""
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.assistant(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=1,  # only the hidden states are used: spare the vocabulary head
        )
        states = out.hidden_states[-1][:, -self.settings.num_latents :]  # [B, N, h_a]
        mean, raw_log_std = self.latent_head(states).chunk(2, dim=-1)
        low, high = self.settings.log_std_min, self.settings.log_std_max
        log_std = low + (high - low) * torch.sigmoid(raw_log_std + self._log_std_offset)
        return LatentDistribution(mean, log_std, states.mean(dim=1))

    def reset_log_std(self) -> None:
        """Make log-std ``init_log_std`` for every question again; the mean is unchanged."""
        with torch.no_grad():
            self.latent_head.weight[self.settings.latent_dim :].zero_()
            self.latent_head.bias[self.settings.latent_dim :].zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        z: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[LatentDistribution, torch.Tensor]:
        """Training goes through here, so that a DDP/FSDP wrapper sees every trainable use.

        RL passes sampled latents z [B, G, N, d_z] and gets the policy and their values
        [B, G]; the warm start passes ``noise`` [B, N, d_z] and gets the policy and the
        projected reparameterised latents [B, N, H] (gradients reach the projector).
        """
        dist = self.distribution(input_ids, attention_mask)
        if noise is not None:
            return dist, self.projector(dist.mean + dist.log_std.exp() * noise)
        return dist, self.value(dist.features, z)

    def value(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Predicted reward of latents z [B, G, N, d_z] for questions with features [B, h_a]."""
        batch, group = z.shape[:2]
        inputs = torch.cat([features[:, None].expand(batch, group, -1), z.flatten(2)], dim=-1)
        return self.value_head(inputs.detach()).squeeze(-1)  # [B, G]

    # ---- the main model's input ----------------------------------------------------------

    def inject(
        self, embed_tokens: nn.Module, tokenizer, prompt: str, latents: torch.Tensor
    ) -> torch.Tensor:
        """``prompt_embeds`` [L, H] of the main model for one prompt and projected latents [N, H]."""
        settings = self.settings
        return build_prompt_embeds(
            embed_tokens, tokenizer, prompt, latents, settings.answer_cue, settings.use_markers,
            settings.latent_position,
        )  # fmt: skip

    def solution_inputs(
        self,
        embed_tokens: nn.Module,
        tokenizer,
        prompts: Sequence[str],
        targets: Sequence[str],
        latents: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced main-model inputs [B, L, H] (each prompt with its projected latents
        [B, N, H], then its target and EOS), labels [B, L] on the target tokens only (-100
        elsewhere) and the attention mask; right-padded, on the embeddings' device."""
        device = embed_tokens.weight.device
        inputs, labels = [], []
        for prompt, target, vectors in zip(prompts, targets, latents, strict=True):
            prompt_embeds = self.inject(embed_tokens, tokenizer, prompt, vectors)
            ids = tokenizer(target, add_special_tokens=False)["input_ids"]
            ids.append(tokenizer.eos_token_id)
            inputs.append(
                torch.cat([prompt_embeds, embed_tokens(torch.tensor(ids, device=device))])
            )
            labels.append([-100] * prompt_embeds.shape[0] + ids)
        width = max(len(label) for label in labels)
        padded = inputs[0].new_zeros(len(inputs), width, inputs[0].shape[1])
        label_ids = torch.full((len(inputs), width), -100, device=device)
        mask = torch.zeros(len(inputs), width, dtype=torch.long, device=device)
        for i, (x, label) in enumerate(zip(inputs, labels, strict=True)):
            padded[i, : x.shape[0]] = x
            label_ids[i, : len(label)] = torch.tensor(label)
            mask[i, : x.shape[0]] = 1
        return padded, label_ids, mask

    @torch.no_grad()
    def mean_latent_prompts(
        self, embed_tokens: nn.Module, tokenizer, rows: Sequence[Mapping], batch_size: int = 64
    ) -> list[torch.Tensor]:
        """Main-model inputs carrying each question's mean latent (deterministic decoding)."""
        rows = list(rows)  # a datasets.Dataset slices into columns, not rows
        prompts = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            device = self.latent_head.weight.device
            encoded = self.encode_questions([row["question"] for row in chunk])
            dist = self.distribution(*(t.to(device) for t in encoded))
            latents = self.projector(dist.mean).to(embed_tokens.weight.device)  # [B, N, H]
            prompts += [
                self.inject(embed_tokens, tokenizer, row["prompt"], vectors)
                for row, vectors in zip(chunk, latents, strict=True)
            ]
        return prompts

    # ---- saving and loading (PEFT-adapter-like folders) --------------------------------

    def heads_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{key}": tensor.detach().cpu().contiguous()
            for name in ("latent_head", "projector", "value_head")
            for key, tensor in getattr(self, name).state_dict().items()
        }

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the plugin folder atomically (staged beside it, then renamed)."""
        with atomic_folder(folder) as staging:
            (staging / PLUGIN_CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
            save_file(self.heads_state_dict(), staging / HEADS_NAME)
            self.assistant.save_pretrained(staging / "assistant")
            self.tokenizer.save_pretrained(staging)

    @classmethod
    def from_pretrained(cls, folder: str | Path, main_model: str | None = None) -> LatentPlugin:
        """Load a plugin; ``main_model``, when given, must be the one it was trained for."""
        folder = Path(folder)
        config_path = folder / PLUGIN_CONFIG_NAME
        if not config_path.is_file():
            raise ValueError(f"{folder} is not a latent plugin: {PLUGIN_CONFIG_NAME} is missing")
        config = LatentPluginConfig.from_json(config_path)
        if main_model is not None and not same_model(main_model, config.main_model):
            raise ValueError(
                f"plugin {folder} was trained for main model {config.main_model!r}, not {main_model!r}"
            )
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if config.settings.lora:
            from peft import PeftModel

            # The base as training built it: with the latent token's embedding row added
            # where its tokenizer lacked one (SmolLM2), which the adapter saved.
            base, _ = load_assistant(resolve_model(config.assistant_model))
            assistant = PeftModel.from_pretrained(base, folder / "assistant")
        else:
            assistant = AutoModelForCausalLM.from_pretrained(folder / "assistant")
        plugin = cls(config, assistant, tokenizer, target_rms=1.0)
        heads = load_file(folder / HEADS_NAME)
        for name in ("latent_head", "projector", "value_head"):
            prefix = f"{name}."
            part = {k[len(prefix) :]: v for k, v in heads.items() if k.startswith(prefix)}
            getattr(plugin, name).load_state_dict(part, strict=True)
        plugin.eval()
        return plugin

    @classmethod
    def for_main_model(
        cls,
        settings: LatentPluginSettings,
        main_model: str,
        main_embeddings: nn.Embedding,
        main_tokenizer: PreTrainedTokenizerBase,
        assistant_model: str | None = None,
    ) -> LatentPlugin:
        """A new, untrained plugin for ``main_model`` (given its input embeddings and
        tokenizer): the assistant from ``assistant_model`` (default: a trainable copy of the
        main model), under a LoRA adapter when ``settings.lora``."""
        if settings.use_markers:
            vocab = main_tokenizer.get_vocab()
            missing = [t for t in (LATENT_START_TOKEN, LATENT_END_TOKEN) if t not in vocab]
            if missing:
                raise ConfigError(
                    f"plugin.use_markers: the main model's tokenizer has no {missing}; "
                    "set plugin.use_markers=false for this model"
                )
        assistant_path = resolve_model(assistant_model or main_model)
        assistant, tokenizer = load_assistant(assistant_path)
        if settings.lora:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=settings.lora_rank, lora_alpha=settings.lora_alpha, target_modules="all-linear"
            )
            assistant = get_peft_model(assistant, lora)
        config = LatentPluginConfig(
            main_model=str(main_model),
            main_hidden_size=main_embeddings.embedding_dim,
            assistant_model=str(assistant_path),
            settings=settings,
        )
        return cls(config, assistant, tokenizer, embedding_rms(main_embeddings.weight))


def load_assistant(path: str | Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """An assistant causal LM and its tokenizer, with the ``<|latent|>`` placeholder token
    added (and an embedding row for it) when the tokenizer lacks one."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    if LATENT_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [LATENT_TOKEN]})
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def same_model(a: str | Path, b: str | Path) -> bool:
    """Whether two model references name the same model (paths compared resolved; a named
    model is its prepared folder)."""
    pa, pb = (Path(prepared_folder(str(ref)) or ref) for ref in (a, b))
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b)


def embedding_rms(embeddings: torch.Tensor) -> float:
    """Typical RMS of a model's token embedding vectors (the projector's target scale)."""
    return embeddings.detach().float().pow(2).mean(dim=-1).sqrt().mean().item()


def build_prompt_embeds(
    embed_tokens: nn.Module,
    tokenizer,
    prompt: str,
    latents: torch.Tensor,
    answer_cue: str,
    use_markers: bool,
    position: str = "before_answer",
) -> torch.Tensor:
    """Main-model input with the projected latents [N, H] spliced in; ``prompt_embeds`` [L, H].

    ``before_answer``: prefix, [<|latent_start|>], latents, [<|latent_end|>], answer cue.
    ``prefix``: [<|latent_start|>], latents, [<|latent_end|>], then the whole prompt.
    """
    before, after = tokens_around_latents(tokenizer, prompt, answer_cue, use_markers, position)
    device = embed_tokens.weight.device

    def embed(ids: list[int]) -> list[torch.Tensor]:
        return [embed_tokens(torch.tensor(ids, dtype=torch.long, device=device))] if ids else []

    return torch.cat([*embed(before), latents, *embed(after)], dim=0)


def tokens_around_latents(
    tokenizer, prompt: str, answer_cue: str, use_markers: bool, position: str = "before_answer"
) -> tuple[list[int], list[int]]:
    """The main model's token ids before and after the latents (see :func:`build_prompt_embeds`)."""
    start = [tokenizer.convert_tokens_to_ids(LATENT_START_TOKEN)] if use_markers else []
    end = [tokenizer.convert_tokens_to_ids(LATENT_END_TOKEN)] if use_markers else []
    if position == "prefix":
        return start, end + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if position != "before_answer":
        raise ValueError(f"latent position {position!r}: expected 'before_answer' or 'prefix'")
    prefix, cue = split_answer_cue(prompt, answer_cue)
    before = tokenizer(prefix, add_special_tokens=False)["input_ids"] + start
    after = end + (tokenizer(cue, add_special_tokens=False)["input_ids"] if cue else [])
    return before, after


def _logit(p: float) -> float:
    return math.log(p / (1 - p))
