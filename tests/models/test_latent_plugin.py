"""Where and how projected latents enter the main model's input."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.models.latent_plugin import build_prompt_embeds
from latentrl.models.tokens import LATENT_END_TOKEN, LATENT_START_TOKEN

PROMPT = "Question: Leo has 17 apples. He sells 2. How many apples does Leo have now?\nAnswer:"


@pytest.fixture(scope="module")
def main_model(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tokenizer, AutoModelForCausalLM.from_pretrained(tiny_model_dir).get_input_embeddings()


def expected(tokenizer, embed, latents, *texts):
    """Embeddings of texts (str) and latent blocks (tensors), concatenated in order."""
    parts = [
        part if isinstance(part, torch.Tensor)
        else embed(torch.tensor(tokenizer(part, add_special_tokens=False)["input_ids"]))
        for part in texts
    ]  # fmt: skip
    return torch.cat(parts)


@pytest.mark.parametrize("use_markers", [True, False])
def test_latents_go_between_question_and_answer_cue(main_model, use_markers):
    tokenizer, embed = main_model
    latents = torch.randn(3, embed.weight.shape[1])
    start, end = (LATENT_START_TOKEN, LATENT_END_TOKEN) if use_markers else ("", "")
    got = build_prompt_embeds(embed, tokenizer, PROMPT, latents, "Answer:", use_markers)
    question = PROMPT.removesuffix("Answer:")
    parts = (
        [question + start, latents, end + "Answer:"]
        if use_markers
        else [question, latents, "Answer:"]
    )
    want = expected(tokenizer, embed, latents, *parts)
    assert torch.equal(got, want)


def test_prefix_position_puts_latents_before_the_whole_prompt(main_model):
    tokenizer, embed = main_model
    latents = torch.randn(4, embed.weight.shape[1])
    got = build_prompt_embeds(embed, tokenizer, PROMPT, latents, "Answer:", False, "prefix")
    assert torch.equal(got[:4], latents)
    assert torch.equal(got[4:], expected(tokenizer, embed, latents, PROMPT))
    marked = build_prompt_embeds(embed, tokenizer, PROMPT, latents, "Answer:", True, "prefix")
    assert torch.equal(
        marked,
        expected(tokenizer, embed, latents, LATENT_START_TOKEN, latents, LATENT_END_TOKEN + PROMPT),
    )


def test_unknown_position_is_named(main_model):
    tokenizer, embed = main_model
    with pytest.raises(ValueError, match="latent position 'suffix'"):
        build_prompt_embeds(
            embed,
            tokenizer,
            PROMPT,
            torch.zeros(1, embed.weight.shape[1]),
            "Answer:",
            True,
            "suffix",
        )
