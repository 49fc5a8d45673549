r"""The LaSER retriever: one causal LM backbone (LoRA via PEFT), two views of a query.

- **latent view** (used at search time, for queries and documents alike): read
  ``text <EOS>``, then K - 1 times append the soft token t = softmax(lm_head(h)) @ E (the
  expected input embedding under the model's next-token distribution), reusing the KV
  cache; the vector is the L2-normalised mean of the K final-layer states.
- **explicit view** (the teacher in training, same weights): read ``query``, the rationale
  segments (blank-line separated, each prefixed by a blank line) and ``<EOS>``; the vector
  is the normalised ``<EOS>`` state, and the state at the last token of each segment is a
  step of the explicit reasoning trajectory.

With ``latent_steps = 1`` the latent view is a plain last-token retriever; with
``latent_documents = False`` documents are encoded by their ``<EOS>`` state alone.

>>> retriever = LaSERRetriever.from_backbone("path/to/model")  # doctest: +SKIP
>>> vectors, states = retriever.encode_latent(["How many eggs?"])  # doctest: +SKIP
>>> retriever.save_pretrained("runs/laser/retriever")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from latentrl.config import RetrieverSettings
from latentrl.io import atomic_folder
from latentrl.losses.retrieval import QueryViews
from latentrl.models.named import resolve_model

CONFIG_NAME = "latentrl_retriever.json"
ADAPTER_FOLDER = "adapter"
MODEL_FOLDER = "model"
SEGMENT_SEPARATOR = "\n\n"
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def split_segments(rationale: str) -> list[str]:
    r"""The rationale's non-empty blank-line-separated segments.

    >>> split_segments("Plan A.\n\nPlan B\nwith detail.\n \n\n")
    ['Plan A.', 'Plan B\nwith detail.']
    """
    return [part.strip() for part in _BLANK_LINE.split(rationale) if part.strip()]


class LaSERRetriever(torch.nn.Module):
    """A causal LM used as a dense encoder with a latent and an explicit view."""

    def __init__(
        self, model: PreTrainedModel, tokenizer, settings: RetrieverSettings, backbone: str
    ) -> None:
        super().__init__()
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"{backbone}: the tokenizer has no EOS token, which both views end with"
            )
        self.model = model  # a PeftModel when settings.lora, else the causal LM itself
        self.tokenizer = tokenizer
        self.settings = settings
        self.backbone = backbone
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    # ---- construction and saving ---------------------------------------------------------

    @classmethod
    def from_backbone(
        cls, backbone: str | Path, settings: RetrieverSettings | None = None
    ) -> LaSERRetriever:
        """A new retriever on a causal LM folder or Hub id (with a fresh LoRA adapter)."""
        settings = settings or RetrieverSettings()
        path = resolve_model(backbone)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if settings.lora:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=settings.lora_rank, lora_alpha=settings.lora_alpha, target_modules="all-linear"
            )
            model = get_peft_model(model, lora)
        # A local folder is recorded absolute, so the saved retriever loads from anywhere.
        where = str(Path(backbone).resolve()) if Path(backbone).is_dir() else str(backbone)
        return cls(model, AutoTokenizer.from_pretrained(path), settings, where)

    def save_pretrained(self, folder: str | Path) -> None:
        """Adapter (or whole model), tokenizer and settings; the folder appears atomically."""
        with atomic_folder(folder) as staging:
            if self.settings.lora:
                self.model.save_pretrained(staging / ADAPTER_FOLDER)
                self.tokenizer.save_pretrained(staging)
            else:  # a whole model, loadable on its own (and by any rollout engine)
                self.model.save_pretrained(staging / MODEL_FOLDER)
                self.tokenizer.save_pretrained(staging / MODEL_FOLDER)
            record = {"backbone": self.backbone, "settings": asdict(self.settings)}
            (staging / CONFIG_NAME).write_text(json.dumps(record, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LaSERRetriever:
        """Load a retriever saved by :meth:`save_pretrained` (its backbone must be reachable)."""
        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise ValueError(f"{folder}: not a LaSER retriever folder (no {CONFIG_NAME})")
        record = json.loads((folder / CONFIG_NAME).read_text())
        settings = RetrieverSettings(**record["settings"])
        if settings.lora:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(
                resolve_model(record["backbone"]), dtype=torch.float32
            )
            model = PeftModel.from_pretrained(base, folder / ADAPTER_FOLDER)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder / MODEL_FOLDER, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder / MODEL_FOLDER)
        return cls(model.eval(), tokenizer, settings, record["backbone"])

    # ---- the two views -----------------------------------------------------------------------

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The causal LM (with LoRA layers injected when there is an adapter)."""
        return self.model.get_base_model() if self.settings.lora else self.model

    def soft_token(self, hidden: Tensor) -> Tensor:
        """softmax(lm_head(h)) @ E: [B, H] final-layer states -> [B, H_embed] input embeddings."""
        lm = self.causal_lm
        probs = torch.softmax(lm.get_output_embeddings()(hidden).float(), dim=-1)
        return probs @ lm.get_input_embeddings().weight

    def encode_latent(
        self, texts: Sequence[str], max_tokens: int | None = None, steps: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Latent view of ``texts``: (unit vectors [B, H], states [B, K, H]).

        ``steps`` overrides K (1: the plain last-token retriever on the same weights).
        """
        steps = steps or self.settings.latent_steps
        rows = [self._ids(text, max_tokens or self.settings.max_query_tokens) for text in texts]
        width = max(len(ids) for ids in rows)
        # Left padding puts every row's <EOS> in the last column, so the soft tokens of the
        # whole batch are appended in one column at a time.
        input_ids = torch.tensor([[self.pad] * (width - len(ids)) + ids for ids in rows])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        decoder = self.causal_lm.get_decoder()
        device = self._device
        out = decoder(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=steps > 1,
        )
        hidden = out.last_hidden_state[:, -1]
        states = [hidden]
        position = positions[:, -1:].to(device)
        mask = mask.to(device)
        for _ in range(steps - 1):
            position = position + 1
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            out = decoder(
                inputs_embeds=self.soft_token(hidden)[:, None],
                attention_mask=mask,
                position_ids=position,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            hidden = out.last_hidden_state[:, -1]
            states.append(hidden)
        stacked = torch.stack(states, dim=1)  # [B, K, H]
        return F.normalize(stacked.mean(dim=1), dim=-1), stacked

    def encode_explicit(
        self, queries: Sequence[str], rationales: Sequence[str]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Explicit view: (unit vectors [B, H], segment states [B, M_max, H], M per row [B]).

        A rationale with no text is one segment: the final ``<EOS>`` state.
        """
        rows, ends = [], []
        for query, rationale in zip(queries, rationales, strict=True):
            ids, segment_ends = self._explicit_ids(query, rationale)
            rows.append(ids)
            ends.append(segment_ends or [len(ids) - 1])
        width = max(len(ids) for ids in rows)
        input_ids = torch.tensor([ids + [self.pad] * (width - len(ids)) for ids in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows])
        hidden = self.causal_lm.get_decoder()(
            input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device)
        ).last_hidden_state  # [B, L, H]
        batch = torch.arange(len(rows), device=hidden.device)
        last = torch.tensor([len(ids) - 1 for ids in rows], device=hidden.device)
        counts = torch.tensor([len(e) for e in ends])
        padded_ends = torch.tensor([e + [e[-1]] * (int(counts.max()) - len(e)) for e in ends])
        segments = hidden[batch[:, None], padded_ends.to(hidden.device)]  # [B, M_max, H]
        return F.normalize(hidden[batch, last], dim=-1), segments, counts

    def query_views(self, queries: Sequence[str], rationales: Sequence[str] | None) -> QueryViews:
        """Both views of a batch (the explicit one only when ``rationales`` are given)."""
        latent, states = self.encode_latent(queries)
        if rationales is None:
            return QueryViews(latent, states, None, None, None)
        return QueryViews(latent, states, *self.encode_explicit(queries, rationales))

    @torch.no_grad()
    def embed(
        self,
        texts: Sequence[str],
        max_tokens: int,
        batch_size: int = 64,
        steps: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Latent-view unit vectors [N, H] of many texts, batched by length, in input order."""
        if not texts:
            raise ValueError("embed: no texts")
        was_training = self.training
        self.eval()
        lengths = [len(self._ids(text, max_tokens)) for text in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        vectors = torch.empty(len(texts), self.hidden_size)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="encoding", disable=not progress):
            picks = order[start : start + batch_size]
            encoded, _ = self.encode_latent([texts[i] for i in picks], max_tokens, steps)
            vectors[picks] = encoded.float().cpu()
        self.train(was_training)
        return vectors

    @property
    def document_steps(self) -> int:
        """K of the documents' latent view: the queries' K, or 1 without ``latent_documents``."""
        return self.settings.latent_steps if self.settings.latent_documents else 1

    @property
    def hidden_size(self) -> int:
        return self.causal_lm.config.hidden_size

    # ---- helpers -------------------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _ids(self, text: str, max_tokens: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[: max_tokens - 1] + [self.eos]

    def _explicit_ids(self, query: str, rationale: str) -> tuple[list[int], list[int]]:
        """Token ids of query + segments + <EOS>, and the index of each segment's last token.

        Segments are tokenized one by one (each after a blank line) so their ends are exact;
        the rationale is cut to ``max_rationale_tokens``, dropping whole segments past it.
        """
        ids = self.tokenizer(query, add_special_tokens=False)["input_ids"]
        ids = ids[: self.settings.max_query_tokens - 1]
        budget, ends = self.settings.max_rationale_tokens, []
        for segment in split_segments(rationale):
            piece = self.tokenizer(SEGMENT_SEPARATOR + segment, add_special_tokens=False)[
                "input_ids"
            ]
            if len(piece) > budget:
                piece = piece[:budget] if not ends else []
            if not piece:
                break
            ids += piece
            budget -= len(piece)
            ends.append(len(ids) - 1)
        return ids + [self.eos], ends
