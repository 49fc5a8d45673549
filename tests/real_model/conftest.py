"""The real SmolLM2-135M-Instruct, prepared from its PyPI wheel (no hub), and one engine of
each backend serving it, shared by every test of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentrl.config import RolloutConfig
from latentrl.models.named import prepare_model
from latentrl.rollout import make_engine
from latentrl.tasks import get_task
from tests.conftest import in_process_vllm, vllm_server

MODEL = "smollm2-135m-instruct"
# Two-digit addition, where the model is weak: 16 problems of the test split.
ADDITION = {"steps": 1, "ops": "+", "max_value": 99}
NUM_PROMPTS = 16


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return prepare_model(MODEL)


@pytest.fixture(scope="session")
def chat_prompts(smollm2_dir) -> list[list[int]]:
    """16 chat-templated prompts, as token ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    rows = get_task("arith").load("test", limit=NUM_PROMPTS, **ADDITION)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{row['question']} Reply with the number only."}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for row in rows
    ]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_dir):
    return make_engine(smollm2_dir, RolloutConfig(backend="hf"))


@pytest.fixture(scope="session")
def smollm2_vllm(smollm2_dir):
    with in_process_vllm(smollm2_dir) as engine:
        yield engine


@pytest.fixture(scope="session")
def smollm2_server_url(smollm2_dir, tmp_path_factory):
    with vllm_server(smollm2_dir, tmp_path_factory) as url:
        yield url
