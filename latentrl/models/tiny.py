"""Tiny models built offline: a locally trained tokenizer and a small Qwen2 causal LM.

No machine here can download weights, so tests, benchmarks and the demo run on models
built from a config. They are ordinary Hugging Face folders (safetensors, config.json,
tokenizer.json) that ``transformers.AutoModelForCausalLM`` and vLLM both load, so the
same code path serves a user's real Qwen/Llama checkpoint.

Here are the parts (tokenizer, model, supervised pre-training); ``latentrl.pretrained``
puts them together on a task's data and caches the folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from latentrl.config import PretrainConfig, TinyModelConfig
from latentrl.models.tokens import (
    EOS_TOKEN,
    LATENT_END_TOKEN,
    LATENT_START_TOKEN,
    LATENT_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    split_answer_cue,
)

logger = logging.getLogger(__name__)

# The pre-tokenizer regex of Qwen2's tokenizer (digits split one by one).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, with latentrl's special tokens.

    ``AutoTokenizer`` rebuilds any qwen2 model's tokenizer as ``Qwen2Tokenizer`` from the
    saved vocab and merges, with Qwen2's own normaliser and pre-tokenizer; training with
    exactly that pipeline makes the rebuilt tokenizer identical to this one (transformers
    and vLLM then agree on every id). Byte-level, so every string round-trips exactly.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[LATENT_START_TOKEN, LATENT_END_TOKEN, LATENT_TOKEN],
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, cfg: TinyModelConfig) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized by ``cfg``; deterministic for ``cfg.seed``."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(config)


def pretrain(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    examples: Sequence[tuple[str, str]],
    cfg: PretrainConfig,
    progress: bool = True,
) -> list[float]:
    """Supervised training on (prompt, target) pairs; loss on the target and EOS only.

    Returns the loss of every step. AdamW with linear warm-up and cosine decay.
    """
    encoded = [_encode_example(tokenizer, prompt, target) for prompt, target in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, cfg.warmup_steps, cfg.steps)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="pre-training tiny model", disable=not progress)
    for _ in bar:
        picks = torch.randint(len(encoded), (cfg.batch_size,), generator=generator).tolist()
        input_ids, labels, attention_mask = _collate([encoded[i] for i in picks], tokenizer)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def pretraining_examples(task, rows, cfg: PretrainConfig) -> list[tuple[str, str]]:
    """(prompt, target) pairs; with ``cfg.thought_rate`` > 0, direct answers with thoughts.

    A thought goes where DLR injects latents: ``prefix <|latent_start|> steps
    <|latent_end|> answer cue``. The steps are the row's ``thought`` column when it has
    one (arith rows do, direct or not), else its solution without the final line.
    """
    if cfg.thought_rate == 0:
        return [(row["prompt"], task.target(row)) for row in rows]
    generator = torch.Generator().manual_seed(cfg.seed)
    shows_thought = (torch.rand(len(rows), generator=generator) < cfg.thought_rate).tolist()
    examples = []
    for row, thought in zip(rows, shows_thought, strict=True):
        *steps, final = row["solution"].split("\n")
        worked = row.get("thought") or "\n".join(steps)
        prompt = row["prompt"]
        if thought and worked and prompt.endswith(cfg.answer_cue):
            prompt = latent_slot_prompt(prompt, cfg.answer_cue, worked)
        examples.append((prompt, " " + final))
    return examples


def latent_slot_prompt(prompt: str, answer_cue: str, slot_text: str = "") -> str:
    """``prompt`` with the latent slot (holding ``slot_text``) before its answer cue."""
    prefix, _ = split_answer_cue(prompt, answer_cue)
    return f"{prefix}{LATENT_START_TOKEN}{slot_text}{LATENT_END_TOKEN}{answer_cue}"


def _encode_example(tokenizer, prompt: str, target: str) -> tuple[list[int], int]:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    return prompt_ids + target_ids + [tokenizer.eos_token_id], len(prompt_ids)


def _collate(batch, tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention_mask[row, : len(ids)] = 1
    return input_ids, labels, attention_mask


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    # Not transformers' cosine schedule, on purpose: its warm-up starts at 0 where this one
    # starts at 1 / warmup. The cached tiny models, and every number measured on them, were
    # built with this one; with transformers' the demo's main model changed (22.8% held out
    # instead of 25.2%) and its plugin's warm start fell below it (16.0 / 16.6% on seeds 0-1).
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
