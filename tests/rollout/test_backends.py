"""The three rollout backends agree: greedy outputs, log-probs, seeded sampling, stop strings.

Uses the real vLLM engine (in-process and a server on loopback) on a tiny pre-trained model.
"""

from __future__ import annotations

import pytest
import torch

from latentrl.config import RolloutConfig
from latentrl.rollout import SamplingParams, make_engine
from latentrl.tasks import get_task
from tests.conftest import TEST_TASK_OPTIONS

# vLLM's CPU kernels and transformers differ by float32 rounding only.
LOGPROB_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def server_engine(tiny_model_dir, vllm_server_url):
    engine = make_engine(
        tiny_model_dir, RolloutConfig(backend="vllm_server", server_urls=[vllm_server_url])
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def token_prompts(hf_engine):
    """Three held-out arith prompts and one the model has never seen the like of."""
    rows = get_task("arith").load("test", limit=3, **TEST_TASK_OPTIONS)
    questions = [row["prompt"] for row in rows] + ["Question:"]
    return [hf_engine.tokenizer(q)["input_ids"] for q in questions]


@pytest.fixture(scope="module")
def embed_prompts(hf_engine, token_prompts):
    """Prompt embeddings with latent-like vectors injected between prefix and answer cue."""
    embed = hf_engine.model.get_input_embeddings()
    generator = torch.Generator().manual_seed(0)
    prompts = []
    for ids in token_prompts:
        with torch.no_grad():
            tokens = embed(torch.tensor(ids))
        injected = (
            torch.randn(4, tokens.shape[1], generator=generator) * tokens.norm(dim=1).mean() / 8
        )
        prompts.append(torch.cat([tokens[:-2], injected, tokens[-2:]]))
    return prompts


def _outputs(engine, prompts, params):
    return [
        [(c.token_ids, c.text, c.finish_reason) for c in out.completions]
        for out in engine.generate(prompts, params)
    ]


@pytest.mark.parametrize("kind", ["tokens", "embeds"])
def test_greedy_outputs_identical_across_backends(
    kind, hf_engine, vllm_engine, server_engine, token_prompts, embed_prompts
):
    prompts = token_prompts if kind == "tokens" else embed_prompts
    params = SamplingParams(temperature=0.0, max_tokens=24)
    expected = _outputs(hf_engine, prompts, params)
    assert _outputs(vllm_engine, prompts, params) == expected
    assert _outputs(server_engine, prompts, params) == expected
    # The trained model answers and stops by itself on the arithmetic prompts.
    assert any(done == "stop" for [(_, _, done)] in expected)
    assert all(len(ids) > 0 for [(ids, _, _)] in expected)


def test_greedy_text_is_an_arithmetic_solution(hf_engine, token_prompts):
    out = hf_engine.generate(token_prompts[1:2], SamplingParams(temperature=0.0, max_tokens=40))
    assert "####" in out[0].completions[0].text


@pytest.mark.parametrize("kind", ["tokens", "embeds"])
def test_logprobs_agree_with_transformers(
    kind, hf_engine, vllm_engine, server_engine, token_prompts, embed_prompts
):
    prompts = token_prompts if kind == "tokens" else embed_prompts
    params = SamplingParams(temperature=0.0, max_tokens=16, logprobs=True)
    reference = hf_engine.generate(prompts, params)
    for engine in (vllm_engine, server_engine):
        for ref, out in zip(reference, engine.generate(prompts, params), strict=True):
            ref_lp, out_lp = ref.completions[0].logprobs, out.completions[0].logprobs
            assert len(ref_lp) == len(out_lp) == len(ref.completions[0].token_ids)
            assert max(abs(a - b) for a, b in zip(ref_lp, out_lp, strict=True)) < LOGPROB_TOLERANCE
            assert all(lp <= 0 for lp in out_lp)


def test_logprobs_equal_a_full_forward_pass(hf_engine, token_prompts):
    """Generated tokens' log-probs equal log_softmax of one teacher-forced forward pass."""
    prompt = token_prompts[0]
    out = hf_engine.generate(
        [prompt], SamplingParams(temperature=1.0, max_tokens=12, seed=3, logprobs=True)
    )
    completion = out[0].completions[0]
    ids = torch.tensor([prompt + completion.token_ids])
    with torch.no_grad():
        logits = hf_engine.model(ids).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion.token_ids)[:, None])[
        :, 0
    ]
    assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=LOGPROB_TOLERANCE)


@pytest.mark.parametrize("engine_name", ["hf_engine", "vllm_engine", "server_engine"])
def test_seeded_sampling_is_reproducible(engine_name, request, token_prompts):
    engine = request.getfixturevalue(engine_name)
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_tokens=16, seed=1234)
    first = _outputs(engine, token_prompts, params)
    assert _outputs(engine, token_prompts, params) == first
    # The n samples of the open-ended prompt are different draws; another seed changes them.
    assert len({tuple(ids) for ids, _, _ in first[-1]}) > 1
    other = _outputs(engine, token_prompts, SamplingParams(**{**params.__dict__, "seed": 99}))
    assert other != first


@pytest.mark.parametrize("engine_name", ["hf_engine", "vllm_engine", "server_engine"])
def test_stop_string_cuts_text(engine_name, request, token_prompts, hf_engine):
    engine = request.getfixturevalue(engine_name)
    full = hf_engine.generate(token_prompts[1:2], SamplingParams(temperature=0.0, max_tokens=40))
    text = full[0].completions[0].text
    assert "####" in text
    out = engine.generate(
        token_prompts[1:2], SamplingParams(temperature=0.0, max_tokens=40, stop=("####",))
    )
    completion = out[0].completions[0]
    assert completion.text == text[: text.index("####")]
    assert completion.finish_reason == "stop"


def test_max_tokens_gives_length_finish(vllm_engine, hf_engine, token_prompts):
    params = SamplingParams(temperature=0.0, max_tokens=2)
    for engine in (vllm_engine, hf_engine):
        completion = engine.generate(token_prompts[:1], params)[0].completions[0]
        assert len(completion.token_ids) == 2
        assert completion.finish_reason == "length"


def test_update_weights_changes_what_vllm_decodes(
    tiny_model_dir, vllm_engine, hf_engine, token_prompts
):
    """New weights reach vLLM's copy of the model; restoring them restores the outputs."""
    from transformers import AutoModelForCausalLM

    params = SamplingParams(temperature=0.0, max_tokens=12)
    before = _outputs(vllm_engine, token_prompts, params)
    perturbed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    try:
        vllm_engine.update_weights(perturbed)
        after = _outputs(vllm_engine, token_prompts, params)
        assert after != before
        reference = make_engine_from_model(perturbed, hf_engine.tokenizer)
        assert after == _outputs(reference, token_prompts, params)
    finally:
        vllm_engine.update_weights(hf_engine.model)
    assert _outputs(vllm_engine, token_prompts, params) == before


def make_engine_from_model(model, tokenizer):
    from latentrl.rollout.hf_engine import HFEngine

    return HFEngine(model, tokenizer=tokenizer)


def test_seeded_sampling_on_a_large_batch(vllm_engine):
    """More prompt tokens than one scheduler step holds, with seeds (vLLM CPU chunking bug)."""
    prompts = [[5 + i % 40] * (30 + i % 20) for i in range(300)]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=4, seed=7)
    first = _outputs(vllm_engine, prompts, params)
    assert _outputs(vllm_engine, prompts, params) == first
    assert len(first) == 300 and all(len(out) == 2 for out in first)
