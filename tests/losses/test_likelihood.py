"""The likelihood reward's pieces: per-token answer probability and its debiasing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentrl.losses import answer_token_probability, likelihood_reward


def naive_answer_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One sequence and one position at a time: softmax, pick, average."""
    scores = []
    for sequence_logits, sequence_labels in zip(logits, labels, strict=True):
        picked = [
            torch.softmax(sequence_logits[t - 1].double(), dim=-1)[label].item()
            for t, label in enumerate(sequence_labels.tolist())
            if t > 0 and label != -100
        ]
        scores.append(sum(picked) / len(picked))
    return torch.tensor(scores, dtype=torch.float64)


@settings(max_examples=50, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(2, 7),
    vocab=st.integers(2, 9),
    seed=st.integers(0, 2**16),
)
def test_answer_token_probability_matches_a_loop(batch, length, vocab, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, length, vocab, generator=generator)
    labels = torch.randint(vocab, (batch, length), generator=generator)
    # Mask a random prefix of each sequence (the prompt), keeping at least its last token.
    prompt_lengths = torch.randint(length - 1, (batch,), generator=generator)
    labels[torch.arange(length)[None] <= prompt_lengths[:, None]] = -100
    scores = answer_token_probability(logits, labels)
    torch.testing.assert_close(scores.double(), naive_answer_probability(logits, labels))
    assert ((scores >= 0) & (scores <= 1)).all()


def test_certain_answers_score_one_and_impossible_ones_zero():
    labels = torch.tensor([[-100, 2, 0]])
    certain = torch.full((1, 3, 3), -1e4)
    certain[0, 0, 2] = certain[0, 1, 0] = 0.0
    assert answer_token_probability(certain, labels).item() == pytest.approx(1.0)
    impossible = certain.roll(1, dims=-1)
    assert answer_token_probability(impossible, labels).item() == pytest.approx(0.0)


def test_a_sequence_without_answer_tokens_is_an_error():
    labels = torch.tensor([[-100, 1], [-100, -100]])
    with pytest.raises(ValueError, match="every sequence needs at least one labelled token"):
        answer_token_probability(torch.zeros(2, 2, 3), labels)
    with pytest.raises(ValueError, match=r"logits must be \[B, L, V\] and labels \[B, L\]"):
        answer_token_probability(torch.zeros(2, 2), labels)


def test_likelihood_reward_subtracts_each_questions_mean_latent_score():
    samples = torch.tensor([[0.9, 0.5, 0.4], [0.1, 0.2, 0.0]])
    expected = torch.tensor([[0.4, 0.0, -0.1], [0.0, 0.1, -0.1]])
    torch.testing.assert_close(likelihood_reward(samples, torch.tensor([0.5, 0.1])), expected)
    with pytest.raises(ValueError, match=r"samples must be \[Q, K\] and at_mean \[Q\]"):
        likelihood_reward(samples, torch.tensor([0.5]))
