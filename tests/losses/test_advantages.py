"""Advantage estimators: hand-computed numbers, NaN (not judged) handling, properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentrl.losses import (
    ADVANTAGE_ESTIMATORS,
    get_advantage_estimator,
    group_advantages,
    register_advantage_estimator,
    rloo_advantages,
)

NAN = float("nan")


def test_grpo_hand_computed():
    # Group 0: rewards [1, 0, 1, 0]: mean 0.5, population std 0.5 -> A = +-0.5 / (0.5 + eps).
    # Group 1: [2, nan, 0, 1]: judged [2, 0, 1], mean 1, population std sqrt(2/3) = 0.81650,
    #          A = [1/0.81650, 0, -1/0.81650, 0] = [1.22474, 0, -1.22474, 0].
    # Group 2: [3, 3, 3, 3]: no spread -> all 0.
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [2.0, NAN, 0.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    eps = 1e-6
    a = 0.5 / (0.5 + eps)
    b = 1.0 / (math.sqrt(2.0 / 3.0) + eps)
    expected = torch.tensor([[a, -a, a, -a], [b, 0.0, -b, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(group_advantages(rewards, eps=eps), expected)


def test_grpo_uses_population_std():
    # Two samples [1, 0]: population std 0.5 gives +-1; Bessel's std 0.7071 would give +-0.7071.
    advantages = group_advantages(torch.tensor([[1.0, 0.0]]), eps=0.0)
    torch.testing.assert_close(advantages, torch.tensor([[1.0, -1.0]]))
    rewards = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    expected = (rewards - rewards.mean(1, keepdim=True)) / rewards.std(
        1, correction=0, keepdim=True
    )
    torch.testing.assert_close(group_advantages(rewards, eps=0.0), expected)


def test_grpo_center_only():
    rewards = torch.tensor([[3.0, 1.0, NAN, 2.0]])
    torch.testing.assert_close(
        group_advantages(rewards, normalize_std=False), torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    )


def test_not_judged_and_degenerate_groups_get_zero():
    rewards = torch.tensor([[NAN, NAN, NAN], [NAN, 5.0, NAN], [0.1, 0.1, 0.1]])
    for name, estimator in ADVANTAGE_ESTIMATORS.items():
        advantages = estimator(rewards)
        assert torch.equal(advantages, torch.zeros(3, 3)), name


def test_uniform_group_is_exactly_zero_despite_rounding():
    # float32 mean of 0.1 x 7 is not exactly 0.1; the centred values would be +-ulp and
    # dividing by (0 + eps) would turn them into visible advantages.
    rewards = torch.full((1, 7), 0.1)
    assert torch.equal(group_advantages(rewards), torch.zeros(1, 7))


def test_rloo_hand_computed():
    # [1, 0, 1, 0]: 1 - mean(0, 1, 0) = 2/3 and 0 - mean(1, 1, 0) = -2/3.
    # [4, nan, 1]: judged [4, 1]: 4 - 1 = 3 and 1 - 4 = -3.
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [4.0, NAN, 1.0, NAN]])
    expected = torch.tensor([[2 / 3, -2 / 3, 2 / 3, -2 / 3], [3.0, 0.0, -3.0, 0.0]])
    torch.testing.assert_close(rloo_advantages(rewards), expected)


def test_integer_rewards_are_accepted():
    torch.testing.assert_close(rloo_advantages(torch.tensor([[2, 0]])), torch.tensor([[2.0, -2.0]]))


def test_registry():
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "rloo"}
    assert get_advantage_estimator("grpo") is group_advantages
    assert get_advantage_estimator("rloo") is rloo_advantages
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*\['grpo', 'rloo'\]"):
        get_advantage_estimator("ppo")
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_estimator("grpo")(rloo_advantages)


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        (torch.zeros(4), r"shape \[Q, G\]"),
        (torch.tensor([[1.0, float("inf")]]), "infinite"),
    ],
)
def test_bad_rewards(rewards, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards)


def test_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(1, 2), eps=-1.0)


# Rewards on a grid of quarters: exact in float32, plenty of ties, and a spread of at least
# 0.25 whenever a group has any, so eps=1e-6 is negligible.
reward_value = st.one_of(st.just(NAN), st.integers(-8, 8).map(lambda n: n / 4))
reward_matrix = st.integers(1, 5).flatmap(
    lambda g: st.lists(st.lists(reward_value, min_size=g, max_size=g), min_size=1, max_size=4)
)


@settings(max_examples=60, deadline=None)
@given(reward_matrix)
def test_properties_of_group_advantages(rows):
    rewards = torch.tensor(rows, dtype=torch.float64)
    judged = ~torch.isnan(rewards)
    for normalize_std in (True, False):
        advantages = group_advantages(rewards, normalize_std=normalize_std)
        assert torch.isfinite(advantages).all()
        assert torch.all(advantages[~judged] == 0)
        for q in range(len(rows)):
            values = advantages[q][judged[q]]
            if len(values):
                assert abs(values.mean().item()) < 1e-9  # centred within the group
            spread = len(values) >= 2 and rewards[q][judged[q]].unique().numel() > 1
            if normalize_std and spread:
                assert values.square().mean().item() == pytest.approx(1.0, abs=1e-4)
            if not spread:
                assert torch.all(values == 0)
    rloo = rloo_advantages(rewards)
    count = judged.sum(1, keepdim=True)
    centred = group_advantages(rewards, normalize_std=False)
    scale = torch.where(count >= 2, count / (count - 1).clamp_min(1), 0.0)
    torch.testing.assert_close(rloo, centred * scale)


@settings(max_examples=30, deadline=None)
@given(reward_matrix, st.floats(0.5, 4.0), st.floats(-3.0, 3.0))
def test_grpo_is_invariant_to_affine_rescaling(rows, scale, shift):
    rewards = torch.tensor(rows, dtype=torch.float64)
    torch.testing.assert_close(
        group_advantages(scale * rewards + shift, eps=0.0), group_advantages(rewards, eps=0.0)
    )
