"""transformers backend: batched decoding with a KV cache, for machines without vLLM.

Rows (prompt x sample) are sorted by prompt length and decoded in batches, left-padded,
from input embeddings (token prompts are embedded first, so both prompt kinds share one
path). Unlike ``model.generate``, a row that finishes leaves the batch at once: its KV
cache rows are dropped (``DynamicCache.batch_select_indices``), so finished sequences
stop costing compute (``benchmarks/rollout_throughput.py`` measures the saving).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from latentrl.config import RolloutConfig
from latentrl.rollout.base import (
    TORCH_DTYPES,
    Completion,
    Prompt,
    RequestOutput,
    RolloutEngine,
    RolloutError,
    SamplingParams,
    prompt_length,
)


@dataclass
class _Row:
    """One sample being decoded: which request and sample it belongs to, and its output."""

    request: int
    sample: int
    embeds: torch.Tensor  # [L, H]
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


class HFEngine(RolloutEngine):
    """Decodes with a transformers causal LM (a folder, a Hub id, or a loaded model)."""

    backend = "hf"

    def __init__(
        self,
        model: str | Path | torch.nn.Module,
        cfg: RolloutConfig | None = None,
        tokenizer=None,
    ) -> None:
        cfg = cfg or RolloutConfig(backend="hf")
        if isinstance(model, torch.nn.Module):
            self.model = model
            if tokenizer is None:
                raise RolloutError("HFEngine: pass the tokenizer along with a loaded model")
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=TORCH_DTYPES[cfg.dtype])
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        self.model.eval()
        self.tokenizer = tokenizer
        config = self.model.config
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.max_model_len = cfg.max_model_len or config.max_position_embeddings
        self.embed_dtype = self.model.get_input_embeddings().weight.dtype
        self.batch_size = cfg.hf_batch_size
        self.eos_token_ids = _eos_ids(self.model, tokenizer)
        # Unseeded requests draw from one engine generator, so a run is reproducible.
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._stop_tokens: dict[tuple[str, ...], list[bool]] = {}

    def _generate(self, prompts: list[Prompt], params: SamplingParams) -> list[RequestOutput]:
        embed = self.model.get_input_embeddings()
        rows = []
        for request, prompt in enumerate(prompts):
            with torch.no_grad():
                embeds = prompt if isinstance(prompt, torch.Tensor) else embed(torch.tensor(prompt))
            for sample in range(params.n):
                generator = None
                if params.seed is not None:
                    generator = torch.Generator().manual_seed(hash((params.seed, sample)))
                rows.append(_Row(request, sample, embeds.to(self.embed_dtype), generator))
        # Similar lengths in one batch waste less padding.
        ordered = sorted(rows, key=lambda row: row.embeds.shape[0])
        for start in range(0, len(ordered), self.batch_size):
            self._decode(ordered[start : start + self.batch_size], params)

        outputs = [RequestOutput(prompt_len=prompt_length(p)) for p in prompts]
        for row in rows:
            outputs[row.request].completions.append(
                Completion(
                    token_ids=row.token_ids,
                    text=row.text,
                    finish_reason=row.finish_reason,
                    logprobs=row.logprobs if params.logprobs else None,
                )
            )
        return outputs

    @torch.no_grad()
    def _decode(self, rows: list[_Row], params: SamplingParams) -> None:
        width = max(row.embeds.shape[0] for row in rows)
        embeds = torch.zeros(len(rows), width, self.hidden_size, dtype=self.embed_dtype)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            length = row.embeds.shape[0]
            embeds[i, width - length :] = row.embeds
            mask[i, width - length :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = (
            self.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # the LM head on the last position only
            )
            .logits[:, -1]
            .float()
        )
        next_position = positions[:, -1] + 1
        active = list(rows)
        while True:
            tokens, logprobs = self._sample(logits, active, params)
            keep = []
            for i, row in enumerate(active):
                row.token_ids.append(tokens[i])
                row.logprobs.append(logprobs[i])
                self._check_finished(row, params)
                if row.finish_reason is None:
                    keep.append(i)
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, next_position = mask[index], next_position[index]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype)], dim=1)
            step_tokens = torch.tensor([[row.token_ids[-1]] for row in active])
            logits = (
                self.model(
                    input_ids=step_tokens,
                    attention_mask=mask,
                    position_ids=next_position[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
                .logits[:, -1]
                .float()
            )
            next_position = next_position + 1

    def _sample(
        self, logits: torch.Tensor, rows: list[_Row], params: SamplingParams
    ) -> tuple[list[int], list[float]]:
        raw_logprobs = torch.log_softmax(logits, dim=-1)
        if params.greedy:
            tokens = logits.argmax(dim=-1)
        else:
            scores = logits / params.temperature
            if params.top_k > 0:
                scores = TopKLogitsWarper(params.top_k)(None, scores)
            if params.top_p < 1.0:
                scores = TopPLogitsWarper(params.top_p)(None, scores)
            probs = torch.softmax(scores, dim=-1)
            tokens = torch.empty(len(rows), dtype=torch.long)
            unseeded = [i for i, row in enumerate(rows) if row.generator is None]
            if unseeded:
                draws = torch.multinomial(probs[unseeded], 1, generator=self.generator)
                tokens[unseeded] = draws[:, 0]
            for i, row in enumerate(rows):
                if row.generator is not None:
                    tokens[i] = torch.multinomial(probs[i], 1, generator=row.generator)[0]
        chosen = raw_logprobs.gather(1, tokens[:, None])[:, 0]
        return tokens.tolist(), chosen.tolist()

    def _check_finished(self, row: _Row, params: SamplingParams) -> None:
        if params.stop and self._may_complete_stop(params.stop)[row.token_ids[-1]]:
            # A stop string completed by this token lies within its last few tokens (a
            # character takes at most 4 byte-level tokens): decode only those.
            window = 4 * max(len(stop) for stop in params.stop) + 1
            tail = self.tokenizer.decode(row.token_ids[-window:], skip_special_tokens=True)
            if any(stop in tail for stop in params.stop):
                text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
                cuts = [text.find(stop) for stop in params.stop if stop in text]
                row.text, row.finish_reason = text[: min(cuts)], "stop"
                return
        if row.token_ids[-1] in self.eos_token_ids and not params.ignore_eos:
            row.finish_reason = "stop"
        elif len(row.token_ids) >= params.max_tokens:
            row.finish_reason = "length"
        if row.finish_reason is not None:
            # Like vLLM's incremental detokenizer, hold back a trailing incomplete UTF-8
            # character (decoded as U+FFFD) rather than emit a replacement character.
            text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
            row.text = text.rstrip("\ufffd")

    def _may_complete_stop(self, stops: tuple[str, ...]) -> list[bool]:
        """Per token id: can appending it complete one of ``stops``? Only a token whose text
        holds a stop string's last character (or part of a multi-byte one) can."""
        if stops not in self._stop_tokens:
            last_chars = {stop[-1] for stop in stops}
            texts = self.tokenizer.batch_decode([[i] for i in range(self.vocab_size)])
            self._stop_tokens[stops] = [
                "\ufffd" in text or any(c in text for c in last_chars) for text in texts
            ]
        return self._stop_tokens[stops]

    def update_weights(self, weights: torch.nn.Module | dict[str, torch.Tensor]) -> None:
        if weights is self.model:
            return
        state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        self.model.load_state_dict(state, strict=True)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config else None
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
