"""The LaSER retriever's two views on the tiny test model: soft tokens, KV-cache reuse,
padding, segment states and saving."""

from __future__ import annotations

import pytest
import torch

from latentrl.config import RetrieverSettings
from latentrl.models.retriever import LaSERRetriever, split_segments

QUERIES = ["Eva has 5 stamps. She finds 1 more.", "What is 12 + 7?", "Tom has 3 apples."]


@pytest.fixture(scope="module")
def retriever(tiny_model_dir):
    torch.manual_seed(0)
    model = LaSERRetriever.from_backbone(tiny_model_dir, RetrieverSettings(lora_rank=8))
    # A fresh LoRA adapter is the identity (B = 0); nudge it so the tests see it at work.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    return model.eval()


@torch.no_grad()
def test_soft_token_is_the_probability_weighted_embedding(retriever):
    hidden = torch.randn(2, retriever.hidden_size, generator=torch.Generator().manual_seed(0))
    lm = retriever.causal_lm
    logits = lm.get_output_embeddings()(hidden).double()
    probs = torch.softmax(logits, dim=-1)
    table = lm.get_input_embeddings().weight.double()
    expected = torch.stack(
        [sum(probs[b, v] * table[v] for v in range(table.shape[0])) for b in range(2)]
    )
    assert torch.allclose(retriever.soft_token(hidden).double(), expected, atol=1e-6)
    assert retriever.soft_token(hidden).shape == (2, table.shape[1])


@torch.no_grad()
def test_latent_view_reuses_the_cache_exactly(retriever):
    """Each step's state equals a full forward pass over text, <EOS> and the soft tokens."""
    vectors, states = retriever.encode_latent(QUERIES[:1])
    assert states.shape == (1, 3, retriever.hidden_size)
    ids = retriever.tokenizer(QUERIES[0], add_special_tokens=False)["input_ids"] + [retriever.eos]
    embed = retriever.causal_lm.get_input_embeddings()
    inputs = embed(torch.tensor([ids]))
    decoder = retriever.causal_lm.get_decoder()
    for step in range(3):
        hidden = decoder(inputs_embeds=inputs).last_hidden_state[:, -1]
        assert torch.allclose(hidden, states[:, step], atol=1e-5), f"step {step}"
        inputs = torch.cat([inputs, retriever.soft_token(hidden)[:, None]], dim=1)
    assert torch.allclose(vectors, torch.nn.functional.normalize(states.mean(1), dim=-1))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(1))


@torch.no_grad()
def test_latent_view_of_a_padded_batch_equals_one_at_a_time(retriever):
    batch, _ = retriever.encode_latent(QUERIES)
    alone = torch.cat([retriever.encode_latent([q])[0] for q in QUERIES])
    assert torch.allclose(batch, alone, atol=1e-5)
    # K = 1 is the plain last-token retriever: the normalised <EOS> state.
    plain, states = retriever.encode_latent(QUERIES, steps=1)
    assert states.shape[1] == 1
    assert torch.allclose(plain, torch.nn.functional.normalize(states[:, 0], dim=-1))
    # embed() sorts by length and batches; the order of its rows is the input order.
    assert torch.allclose(retriever.embed(QUERIES, 256, batch_size=2), batch, atol=1e-5)


@torch.no_grad()
def test_explicit_view_takes_segment_ends_and_eos(retriever):
    rationales = ["How many now?\n\nAdd one.\n\nWrite the total.", "Add the numbers.", ""]
    vectors, segments, counts = retriever.encode_explicit(QUERIES, rationales)
    assert counts.tolist() == [3, 1, 1]
    assert segments.shape == (3, 3, retriever.hidden_size)

    tokenize = lambda text: retriever.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids, ends = tokenize(QUERIES[0]), []
    for segment in split_segments(rationales[0]):
        ids += tokenize("\n\n" + segment)
        ends.append(len(ids) - 1)
    ids.append(retriever.eos)
    hidden = retriever.causal_lm.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
    assert torch.allclose(segments[0], hidden[ends], atol=1e-5)
    assert torch.allclose(vectors[0], torch.nn.functional.normalize(hidden[-1], dim=-1), atol=1e-5)
    # No rationale text: one segment, the <EOS> state of the query alone.
    alone = retriever.causal_lm.get_decoder()(
        input_ids=torch.tensor([tokenize(QUERIES[2]) + [retriever.eos]])
    ).last_hidden_state[0, -1]
    assert torch.allclose(segments[2, 0], alone, atol=1e-5)


def test_save_and_load_give_the_same_vectors(retriever, tmp_path):
    retriever.save_pretrained(tmp_path / "retriever")
    loaded = LaSERRetriever.from_pretrained(tmp_path / "retriever")
    with torch.no_grad():
        assert torch.equal(loaded.encode_latent(QUERIES)[0], retriever.encode_latent(QUERIES)[0])
    assert loaded.settings == retriever.settings
    with pytest.raises(ValueError, match="not a LaSER retriever folder"):
        LaSERRetriever.from_pretrained(tmp_path)
