"""Tiny CoCoVa models for the tests: a ViT and a language model, built once and cached
(the fixture is shared through tests/conftest.py)."""

from __future__ import annotations

import pytest

from latentrl.config import PretrainConfig, TinyModelConfig, TinyViTConfig
from latentrl.pretrained import pretrained_tiny_vit, pretrained_vqa_language_model
from tests.conftest import TEST_SEED

TEST_VIT = TinyViTConfig(pretrain_steps=60, pretrain_examples=1000, seed=TEST_SEED)
TEST_LM = TinyModelConfig(
    vocab_size=320, num_layers=1, intermediate_size=256, max_position_embeddings=128, seed=TEST_SEED
)
TEST_LM_PRETRAIN = PretrainConfig(steps=80, batch_size=32, num_examples=2000, seed=TEST_SEED)


@pytest.fixture(scope="session")
def tiny_vqa_models() -> dict[str, str]:
    return {
        "vision_encoder": str(pretrained_tiny_vit(TEST_VIT, progress=False)),
        "language_model": str(
            pretrained_vqa_language_model(
                "shapes_vqa", {}, TEST_LM, TEST_LM_PRETRAIN, progress=False, thought_rate=0.5
            )
        ),
    }
