"""Bad requests raise one clear RolloutError, and the engine keeps serving afterwards."""

from __future__ import annotations

import pytest
import torch

from latentrl.config import ConfigError, RolloutConfig, load_config
from latentrl.rollout import RolloutError, SamplingParams, make_engine


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be >= 1, got 0"),
        ({"max_tokens": -5}, "max_tokens must be >= 1, got -5"),
        ({"n": 0}, "n must be >= 1, got 0"),
        ({"temperature": -1.0}, "temperature must be >= 0, got -1.0"),
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"stop": ("",)}, "stop strings must be non-empty"),
    ],
)
def test_bad_sampling_params(kwargs, message):
    with pytest.raises(RolloutError) as err:
        SamplingParams(**kwargs)
    assert str(err.value) == message


def _bad_prompts(engine):
    width = engine.hidden_size
    return [
        ([torch.zeros(3, width + 1)], f"prompt 0: prompt_embeds width {width + 1} does not match the model's hidden_size {width}"),
        ([torch.zeros(3, width, dtype=torch.long)], "prompt 0: prompt_embeds must be a floating-point tensor, got torch.int64"),
        ([torch.zeros(1, 3, width)], "prompt 0: prompt_embeds must be 2-D [length, hidden_size], got shape (1, 3, " + str(width) + ")"),
        ([torch.full((2, width), float("nan"))], "prompt 0: prompt_embeds contain NaN or infinite values"),
        ([[1, 2], []], "prompt 1: empty prompt"),
        ([torch.zeros(0, width)], "prompt 0: empty prompt"),
        ([[1] * engine.max_model_len], f"prompt 0: prompt length {engine.max_model_len} + max_tokens 4 exceeds the model's context of {engine.max_model_len} tokens"),
        ([[1, engine.vocab_size]], f"prompt 0: token ids must be in [0, {engine.vocab_size}), got 1..{engine.vocab_size}"),
        (["a string"], "prompt 0: expected a list of token ids or a 2-D prompt_embeds tensor, got str"),
    ]  # fmt: skip


@pytest.mark.parametrize("engine_name", ["hf_engine", "vllm_engine"])
def test_bad_prompts_raise_and_engine_keeps_serving(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    params = SamplingParams(temperature=0.0, max_tokens=4)
    good = engine.generate([[1, 2, 3]], params)
    for prompts, message in _bad_prompts(engine):
        with pytest.raises(RolloutError) as err:
            engine.generate(prompts, params)
        assert str(err.value) == message
    assert (
        engine.generate([[1, 2, 3]], params)[0].completions[0].token_ids
        == good[0].completions[0].token_ids
    )


def test_unknown_backend_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as err:
        load_config(RolloutConfig, overrides=["backend=tensorrt"])
    assert str(err.value) == (
        "backend: expected one of 'auto', 'vllm', 'vllm_server', 'hf', got 'tensorrt' (in the command line)"
    )


def test_unknown_backend_in_make_engine(tiny_model_dir):
    with pytest.raises(
        RolloutError,
        match="unknown rollout backend 'tensorrt'; choose one of auto, vllm, vllm_server, hf",
    ):
        make_engine(tiny_model_dir, backend="tensorrt")


def test_unreachable_server_is_named(tiny_model_dir):
    cfg = RolloutConfig(backend="vllm_server", server_urls=["http://127.0.0.1:9"])
    with pytest.raises(RolloutError, match=r"^vLLM server at http://127.0.0.1:9 is unreachable"):
        make_engine(tiny_model_dir, cfg)


def test_server_backend_needs_urls():
    with pytest.raises(
        ValueError, match="server_urls: the vllm_server backend needs at least one URL"
    ):
        RolloutConfig(backend="vllm_server")
