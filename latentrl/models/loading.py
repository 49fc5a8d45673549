"""Loading models for trainers and engines: only the input embeddings of a model a trainer
never runs itself, or a model with its LoRA adapter merged in, which any engine decodes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import cached_file

from latentrl.models.named import resolve_model

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def load_input_embeddings(model: str | Path) -> nn.Embedding:
    """A causal LM's input embedding matrix alone (frozen), from a folder or the Hub.

    When a vLLM server decodes for the trainer, the trainer needs the main model's token
    embeddings to build ``prompt_embeds`` but not its other weights: this reads the one
    tensor from the safetensors shard that holds it.
    """
    model = resolve_model(model)
    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    target = skeleton.get_input_embeddings().weight
    name = next(n for n, p in skeleton.named_parameters() if p is target)
    index = cached_file(str(model), INDEX_FILE, _raise_exceptions_for_missing_entries=False)
    if index is not None:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        if name not in weight_map:
            raise ValueError(f"{model}: {INDEX_FILE} has no tensor {name!r}")
        shard = cached_file(str(model), weight_map[name])
    else:
        shard = cached_file(str(model), SINGLE_FILE)
    with safe_open(shard, framework="pt") as weights:
        stored = weights.keys()  # safe_open supports no `in`
        if name not in stored:
            raise ValueError(f"{model}: {Path(shard).name} has no tensor {name!r}")
        weight = weights.get_tensor(name)
    return nn.Embedding.from_pretrained(weight, freeze=True)


def merge_adapter(model: str, adapter: str, folder: Path) -> Path:
    """Save ``model`` with the PEFT adapter merged in, so any engine can decode it."""
    from peft import PeftModel

    model = resolve_model(model)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter)
    merged.merge_and_unload().save_pretrained(folder)
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    return folder


def fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """SHA-256 of every tensor's bytes: proves a frozen model bit-identical without holding
    a second copy of it (a 7B main model would double its memory)."""
    return {
        name: hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy()).hexdigest()
        for name, t in model.state_dict().items()
    }
