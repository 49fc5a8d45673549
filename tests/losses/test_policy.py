"""Gaussian latent-policy densities, the PPO clipped objective and the value loss."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from latentrl.losses import (
    PPOClipLoss,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    value_loss,
)


def _gaussians(shape, seed):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=torch.float64)
    log_std = 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
    return mean, log_std, g


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 1, 1), (3, 7), (6,)])
@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_log_prob_matches_torch_normal(shape, seed):
    mean, log_std, g = _gaussians(shape, seed)
    z = mean + log_std.exp() * torch.randn(shape, generator=g, dtype=torch.float64)
    dims = tuple(range(1, len(shape)))
    expected = Normal(mean, log_std.exp()).log_prob(z)
    expected = expected.sum(dims) if dims else expected
    torch.testing.assert_close(gaussian_log_prob(z, mean, log_std), expected)


def test_gaussian_log_prob_broadcasts_shared_parameters():
    mean, log_std, g = _gaussians((1, 3, 4), 2)
    z = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    expected = Normal(mean, log_std.exp()).log_prob(z).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(z, mean, log_std), expected)


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_kl_matches_torch_kl_divergence(shape, seed):
    mean_p, log_std_p, _ = _gaussians(shape, seed)
    mean_q, log_std_q, _ = _gaussians(shape, seed + 100)
    expected = kl_divergence(Normal(mean_p, log_std_p.exp()), Normal(mean_q, log_std_q.exp()))
    expected = expected.sum(tuple(range(1, len(shape))))
    kl = gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    torch.testing.assert_close(kl, expected)
    assert torch.all(kl >= 0)
    same = gaussian_kl(mean_p, log_std_p, mean_p, log_std_p)
    torch.testing.assert_close(same, torch.zeros(shape[0], dtype=torch.float64))


def test_gaussian_entropy_matches_torch_normal():
    mean, log_std, _ = _gaussians((3, 4, 2), 5)
    expected = Normal(mean, log_std.exp()).entropy().sum((1, 2))
    torch.testing.assert_close(gaussian_entropy(log_std), expected)


def test_event_dims_keeps_several_batch_dims():
    # [Q, K, N, D] samples against per-question parameters [Q, 1, N, D] -> [Q, K]
    mean, log_std, g = _gaussians((3, 1, 4, 2), 6)
    z = torch.randn(3, 5, 4, 2, generator=g, dtype=torch.float64)
    normal = Normal(mean, log_std.exp())
    logp = gaussian_log_prob(z, mean, log_std, event_dims=2)
    torch.testing.assert_close(logp, normal.log_prob(z).sum((2, 3)))
    flat = gaussian_log_prob(
        z.flatten(0, 1),
        mean.expand(3, 5, 4, 2).flatten(0, 1),
        log_std.expand(3, 5, 4, 2).flatten(0, 1),
    )
    torch.testing.assert_close(logp.flatten(), flat)
    torch.testing.assert_close(
        gaussian_entropy(log_std, event_dims=2), normal.entropy().sum((2, 3))
    )
    other_mean, other_log_std, _ = _gaussians((3, 1, 4, 2), 7)
    other = Normal(other_mean, other_log_std.exp())
    torch.testing.assert_close(
        gaussian_kl(mean, log_std, other_mean, other_log_std, event_dims=2),
        kl_divergence(normal, other).sum((2, 3)),
    )
    with pytest.raises(ValueError, match="event_dims"):
        gaussian_log_prob(z, mean, log_std, event_dims=4)


def test_scalar_input_is_rejected():
    with pytest.raises(ValueError, match="batch dimension"):
        gaussian_entropy(torch.tensor(0.0))


# ----------------------------------------------------------------------------- PPO


def _hand_example():
    # ratio = exp(logp_new - logp_old) = [1.5, 0.5, 1.1, 0.7], A = [1, -1, 2, 1], eps = 0.2:
    #   s0: min(1.5*1, 1.2*1)       = 1.2   clipped branch active (A > 0, ratio > 1.2)
    #   s1: min(0.5*-1, 0.8*-1)     = -0.8  clipped branch active (A < 0, ratio < 0.8)
    #   s2: min(1.1*2, 1.1*2)       = 2.2   inside the trust region
    #   s3: min(0.7*1, 0.8*1)       = 0.7   outside the region, but the unclipped branch wins
    # policy_loss = -(1.2 - 0.8 + 2.2 + 0.7) / 4 = -0.825, clip_fraction = 2/4 = 0.5
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.7], dtype=torch.float64)
    logp_old = torch.tensor([-3.0, -10.0, -0.5, -7.0], dtype=torch.float64)
    logp_new = (logp_old + ratio.log()).requires_grad_()
    advantages = torch.tensor([1.0, -1.0, 2.0, 1.0], dtype=torch.float64)
    return ratio, logp_new, logp_old, advantages


def test_ppo_hand_computed():
    ratio, logp_new, logp_old, advantages = _hand_example()
    loss, stats = PPOClipLoss(clip_eps=0.2)(logp_new, logp_old, advantages)
    assert loss.item() == pytest.approx(-0.825)
    assert stats["policy_loss"] == pytest.approx(-0.825)
    assert stats["loss"] == pytest.approx(-0.825)
    assert stats["clip_fraction"] == 0.5
    assert stats["clip_fraction_high"] == 0.25  # s0
    assert stats["clip_fraction_low"] == 0.25  # s1
    assert stats["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1 + 0.7) / 4)  # 0.95
    # (r - 1) - log r: 0.094535, 0.193147, 0.004690, 0.056675 -> mean 0.087262
    assert stats["approx_kl"] == pytest.approx(0.0872617, abs=1e-6)
    assert "kl" not in stats and "entropy" not in stats
    # d loss / d logp_new_b = -ratio_b * A_b / B where the unclipped branch is active, else 0:
    #   [0, 0, -1.1*2/4, -0.7*1/4] = [0, 0, -0.55, -0.175]
    loss.backward()
    torch.testing.assert_close(
        logp_new.grad, torch.tensor([0.0, 0.0, -0.55, -0.175], dtype=torch.float64)
    )


def test_ppo_with_kl_and_entropy_hand_computed():
    # kl mean = 0.25, entropy mean = 2.0: loss = -0.825 + 0.5 * 0.25 - 0.01 * 2.0 = -0.72
    _, logp_new, logp_old, advantages = _hand_example()
    kl = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    entropy = torch.tensor([1.0, 2.0, 3.0, 2.0], dtype=torch.float64)
    loss_fn = PPOClipLoss(clip_eps=0.2, kl_coef=0.5, entropy_coef=0.01)
    loss, stats = loss_fn(logp_new, logp_old, advantages, kl=kl, entropy=entropy)
    assert loss.item() == pytest.approx(-0.72)
    assert stats["policy_loss"] == pytest.approx(-0.825)
    assert stats["kl"] == pytest.approx(0.25)
    assert stats["entropy"] == pytest.approx(2.0)


def test_ppo_on_policy_is_minus_mean_advantage_and_reinforce_gradient():
    logp = torch.randn(6, dtype=torch.float64, requires_grad=True)
    advantages = torch.randn(6, dtype=torch.float64)
    loss, stats = PPOClipLoss()(logp, logp.detach(), advantages)
    assert loss.item() == pytest.approx(-advantages.mean().item())
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl"] == 0.0
    loss.backward()
    torch.testing.assert_close(logp.grad, -advantages / 6)


@pytest.mark.parametrize("log_ratio", [1e4, -1e4, 80.0, 1e30])
def test_huge_log_ratio_stays_finite(log_ratio):
    # Latent log-probs are sums over N*D dimensions: log-ratios of hundreds of nats happen.
    logp_old = torch.zeros(4)
    logp_new = torch.full((4,), log_ratio, requires_grad=True)
    kl = torch.full((4,), 3.0, requires_grad=True)
    loss_fn = PPOClipLoss(kl_coef=0.1)
    loss, stats = loss_fn(logp_new, logp_old, torch.tensor([1.0, -1.0, 2.0, -0.5]), kl=kl)
    assert torch.isfinite(loss)
    assert all(math.isfinite(value) for value in stats.values())
    loss.backward()
    assert torch.isfinite(logp_new.grad).all() and torch.isfinite(kl.grad).all()


def test_half_precision_inputs_are_promoted():
    _, logp_new, logp_old, advantages = _hand_example()
    loss, _ = PPOClipLoss()(logp_new.detach().bfloat16(), logp_old.bfloat16(), advantages.half())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-0.825, abs=0.02)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"clip_eps": -0.1}, "clip_eps"),
        ({"clip_eps": 0.0}, "clip_eps"),
        ({"clip_eps": 1.5}, "clip_eps"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"entropy_coef": -0.01}, "entropy_coef"),
        ({"entropy_coef": float("nan")}, "entropy_coef"),
        ({"max_log_ratio": 0.1}, "max_log_ratio"),
        ({"clip_eps": "0.2"}, "clip_eps"),
    ],
)
def test_ppo_rejects_bad_hyper_parameters(options, field):
    with pytest.raises(ValueError, match=rf"PPOClipLoss\.{field}"):
        PPOClipLoss(**options)


def test_ppo_rejects_bad_inputs():
    loss_fn = PPOClipLoss(kl_coef=0.1)
    ones = torch.ones(3)
    with pytest.raises(ValueError, match="advantages must have shape"):
        loss_fn(ones, ones, torch.ones(4), kl=ones)
    with pytest.raises(ValueError, match="logp_old must have shape"):
        loss_fn(ones, torch.ones(3, 1), ones, kl=ones)
    with pytest.raises(ValueError, match="no kl tensor"):
        loss_fn(ones, ones, ones)
    with pytest.raises(ValueError, match="no entropy tensor"):
        PPOClipLoss(entropy_coef=0.1)(ones, ones, ones)
    with pytest.raises(ValueError, match="empty batch"):
        PPOClipLoss()(torch.ones(0), torch.ones(0), torch.ones(0))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(-10, 10)),
        min_size=1,
        max_size=8,
    ),
    st.floats(0.01, 0.9),
)
def test_ppo_properties(samples, clip_eps):
    logp_new, logp_old, advantages = (torch.tensor(column) for column in zip(*samples, strict=True))
    logp_new.requires_grad_()
    loss, stats = PPOClipLoss(clip_eps=clip_eps)(logp_new, logp_old, advantages)
    assert torch.isfinite(loss)
    assert 0.0 <= stats["clip_fraction"] <= 1.0
    assert stats["approx_kl"] >= -1e-6
    # The clipped objective is a pessimistic bound: never above the unclipped surrogate.
    ratio = (logp_new - logp_old).clamp(-20, 20).exp()
    assert -loss.item() <= (ratio * advantages).mean().item() + 1e-4 * (1 + ratio.max().item())
    loss.backward()
    assert torch.isfinite(logp_new.grad).all()


# ----------------------------------------------------------------------------- value


def test_value_loss_hand_computed_and_skips_not_judged():
    # errors on judged samples: [0.5 - 1, 1 - 0, 0.25 - 0.25] -> mse (0.25 + 1 + 0) / 3
    pred = torch.tensor([0.5, 1.0, 0.25, 7.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.25, float("nan")])
    loss, stats = value_loss(pred, target)
    assert loss.item() == pytest.approx(1.25 / 3)
    assert stats == {"value_mse": pytest.approx(1.25 / 3), "value_mae": pytest.approx(0.5)}
    loss.backward()
    # d/dpred = 2 * error / 3, and 0 for the unjudged sample
    torch.testing.assert_close(pred.grad, torch.tensor([-1 / 3, 2 / 3, 0.0, 0.0]))


def test_value_loss_without_judged_samples_is_connected_zero():
    pred = torch.tensor([0.5, 1.0], requires_grad=True)
    loss, stats = value_loss(pred, torch.full((2,), float("nan")))
    assert loss.item() == 0.0 and stats["value_mse"] == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(2))


def test_value_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        value_loss(torch.zeros(3), torch.zeros(3, 1))
