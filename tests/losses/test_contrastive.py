"""Contrastive estimators against naive Python loops over their formulas, and their behaviour."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentrl.losses import (
    CONTRASTIVE_ESTIMATORS,
    MVDHELLoss,
    MVInfoNCELoss,
    RewardContrastiveLoss,
    make_contrastive_loss,
    mv_dhel,
    mv_infonce,
    select_views,
)
from tests.conftest import TEST_SEED

# ------------------------------------------------------------------ naive references
# Plain Python floats and loops, written straight from the formulas in DESIGN.md item 7.


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _sim(a: list[float], b: list[float], tau: float) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / tau


def naive_reward_infonce(embeddings, rewards, tau, skip_uniform_groups):
    num_q, k = len(embeddings), len(embeddings[0])
    u = {(q, i): _unit(embeddings[q][i]) for q in range(num_q) for i in range(k)}
    losses = []
    for q in range(num_q):
        exact = [Fraction(r) for r in rewards[q]]  # exact mean: ties at the mean are kept
        mean = sum(exact) / k
        uniform = max(exact) == min(exact)
        for i in range(k):
            a = (q, i)
            positives = [(q, j) for j in range(k) if j != i and exact[j] >= mean]
            if not positives or (skip_uniform_groups and uniform):
                continue
            denominator = sum(math.exp(_sim(u[a], u[b], tau)) for b in u if b != a)
            terms = [math.log(math.exp(_sim(u[a], u[p], tau)) / denominator) for p in positives]
            losses.append(-sum(terms) / len(terms))
    return (sum(losses) / len(losses) if losses else 0.0), len(losses)


def naive_mv_infonce(views, tau):
    num_i, num_v = len(views), len(views[0])
    u = [[_unit(view) for view in instance] for instance in views]
    losses = []
    for i in range(num_i):
        numerator = 2 * sum(
            math.exp(_sim(u[i][v], u[i][m], tau)) for v in range(num_v) for m in range(v + 1, num_v)
        )
        denominator = sum(
            math.exp(_sim(u[i][v], u[j][m], tau))
            for v in range(num_v)
            for j in range(num_i)
            for m in range(num_v)
            if (j, m) != (i, v)
        )
        losses.append(-math.log(numerator / denominator))
    return losses


def naive_mv_dhel(views, tau):
    num_i, num_v = len(views), len(views[0])
    u = [[_unit(view) for view in instance] for instance in views]
    losses = []
    for i in range(num_i):
        numerator = sum(
            math.exp(_sim(u[i][v], u[i][m], tau)) for v in range(num_v) for m in range(v + 1, num_v)
        )
        denominator = 1.0
        for v in range(num_v):
            denominator *= sum(
                math.exp(_sim(u[i][v], u[j][v], tau)) for j in range(num_i) if j != i
            )
        losses.append(-math.log(numerator / denominator))
    return losses


def naive_select_views(embeddings, rewards, num_views):
    views, questions = [], []
    for q, row in enumerate(rewards):
        if sum(r > 0 for r in row) < num_views:
            continue
        order = sorted(range(len(row)), key=lambda k: -row[k])  # stable: ties keep index order
        views.append([embeddings[q][k] for k in order[:num_views]])
        questions.append(q)
    return views, questions


def naive_nt_xent(views, tau):
    """The usual per-anchor InfoNCE (SimCLR NT-Xent) with 2 views, averaged over anchors."""
    u = [[_unit(view) for view in instance] for instance in views]
    losses = []
    for i in range(len(u)):
        for v in range(2):
            positive = math.exp(_sim(u[i][v], u[i][1 - v], tau))
            denominator = sum(
                math.exp(_sim(u[i][v], u[j][m], tau))
                for j in range(len(u))
                for m in range(2)
                if (j, m) != (i, v)
            )
            losses.append(-math.log(positive / denominator))
    return sum(losses) / len(losses)


# ------------------------------------------------------------------ random batches


def _batch(seed, num_q, k, dim, kind, dtype=torch.float64):
    """Embeddings and rewards; ``kind`` picks the reward pattern."""
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_q, k, dim, generator=g, dtype=dtype)
    if kind == "continuous":  # uneven rewards, a few non-positive
        rewards = torch.rand(num_q, k, generator=g) * 2 - 0.3
    elif kind == "ties":  # dual-reward-like grid values with many ties (and means hit exactly)
        rewards = torch.randint(0, 4, (num_q, k), generator=g) * 0.5
    elif kind == "uniform_groups":  # half the groups all equal (0.1 is inexact in binary)
        rewards = torch.randint(0, 3, (num_q, k), generator=g) * 0.5
        rewards[::2] = 0.1
    else:
        raise ValueError(kind)
    return embeddings, rewards.float()


CASES = [
    (seed, num_q, k, dim, kind)
    for seed, (num_q, k, dim) in enumerate([(3, 4, 5), (5, 3, 8), (2, 6, 3), (4, 5, 16)])
    for kind in ("continuous", "ties", "uniform_groups")
]


@pytest.mark.parametrize("skip_uniform_groups", [True, False])
@pytest.mark.parametrize(("seed", "num_q", "k", "dim", "kind"), CASES)
def test_reward_infonce_matches_naive_loop(seed, num_q, k, dim, kind, skip_uniform_groups):
    embeddings, rewards = _batch(seed, num_q, k, dim, kind)
    loss_fn = RewardContrastiveLoss(tau=0.2, skip_uniform_groups=skip_uniform_groups)
    loss, stats = loss_fn(embeddings, rewards)
    expected, anchors = naive_reward_infonce(
        embeddings.tolist(), rewards.tolist(), 0.2, skip_uniform_groups
    )
    assert stats["anchors"] == anchors
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["contrastive_loss"] == pytest.approx(expected, abs=1e-5)
    # float32 (training precision) stays within 1e-5 of the float64 loop
    loss32, _ = loss_fn(embeddings.float(), rewards)
    assert loss32.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("num_views", [2, 3])
@pytest.mark.parametrize(("seed", "num_q", "k", "dim", "kind"), CASES)
def test_select_views_matches_naive_loop(seed, num_q, k, dim, kind, num_views):
    embeddings, rewards = _batch(seed, num_q, k, dim, kind)
    views, questions = select_views(embeddings, rewards, num_views)
    expected_views, expected_questions = naive_select_views(
        embeddings.tolist(), rewards.tolist(), num_views
    )
    assert questions.tolist() == expected_questions
    assert views.shape == (len(expected_questions), num_views, dim)
    assert views.tolist() == expected_views


@pytest.mark.parametrize(
    ("loss_cls", "naive"), [(MVInfoNCELoss, naive_mv_infonce), (MVDHELLoss, naive_mv_dhel)]
)
@pytest.mark.parametrize("num_views", [2, 3])
@pytest.mark.parametrize(("seed", "num_q", "k", "dim", "kind"), CASES)
def test_multi_view_losses_match_naive_loops(loss_cls, naive, num_views, seed, num_q, k, dim, kind):
    embeddings, rewards = _batch(seed + 10, num_q + 2, k, dim, kind)
    loss, stats = loss_cls(tau=0.2, num_views=num_views)(embeddings, rewards)
    views, _ = naive_select_views(embeddings.tolist(), rewards.tolist(), num_views)
    assert stats["instances"] == len(views)
    if len(views) < 2:
        assert loss.item() == 0.0
        return
    per_instance = naive(views, 0.2)
    expected = sum(per_instance) / len(per_instance)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["contrastive_loss"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("fn", "naive"), [(mv_infonce, naive_mv_infonce), (mv_dhel, naive_mv_dhel)]
)
@pytest.mark.parametrize(("num_i", "num_v", "tau"), [(2, 2, 0.2), (5, 4, 0.5), (7, 3, 0.05)])
def test_per_instance_multi_view_losses_match_naive(fn, naive, num_i, num_v, tau):
    views = torch.randn(num_i, num_v, 6, generator=torch.Generator().manual_seed(num_i))
    expected = torch.tensor(naive(views.double().tolist(), tau))
    torch.testing.assert_close(fn(views.double(), tau), expected.double())
    torch.testing.assert_close(fn(views, tau), expected.float(), atol=1e-5, rtol=1e-5)


def test_mv_dhel_with_two_views_is_dhel():
    # DHEL: -s(i1, i2) + log sum_{j != i} e^{s(i1, j1)} + log sum_{j != i} e^{s(i2, j2)}
    tau = 0.2
    views = torch.randn(6, 2, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = torch.nn.functional.normalize(views, dim=-1)
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    expected = []
    for i in range(6):
        alignment = u[i, 0] @ u[i, 1] / tau
        uniformity = [
            torch.logsumexp((u[:, v] @ u[i, v] / tau)[off_diagonal[i]], dim=0) for v in range(2)
        ]
        expected.append(-alignment + uniformity[0] + uniformity[1])
    torch.testing.assert_close(mv_dhel(views, tau), torch.stack(expected))


def test_mv_infonce_with_two_views_differs_from_per_anchor_infonce():
    views = torch.randn(5, 2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mv = mv_infonce(views, 0.2).mean().item()
    nt_xent = naive_nt_xent(views.tolist(), 0.2)
    # -s + log((D1 + D2) / 2) versus -s + (log D1 + log D2) / 2: larger by Jensen.
    assert mv > nt_xent + 1e-3
    # They coincide only when each instance's two anchors have equal denominators, e.g. when
    # both views of an instance are the same vector.
    twins = views[:, :1].expand(5, 2, 8)
    assert mv_infonce(twins, 0.2).mean().item() == pytest.approx(naive_nt_xent(twins.tolist(), 0.2))


# ------------------------------------------------------------------ semantics


def test_below_mean_anchor_is_pulled_toward_successes():
    # rewards [1, 0, 0]: mean 1/3. Anchor 0 has no positive (the others are below the mean)
    # and is skipped; anchors 1 and 2 (failures) each have positive {0}.
    embeddings = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    _, stats = RewardContrastiveLoss()(embeddings, rewards)
    assert stats["anchors"] == 4


def test_uniform_groups_skipped_by_default():
    embeddings = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    loss, stats = RewardContrastiveLoss()(embeddings, rewards)
    assert stats["anchors"] == 0 and loss.item() == 0.0
    # Literal formula: every latent of an all-equal group is at the mean, so all are positives.
    _, stats = RewardContrastiveLoss(skip_uniform_groups=False)(embeddings, rewards)
    assert stats["anchors"] == 6


def _leaf(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


REWARDS = torch.tensor(
    [[1.0, 1.0, 0.5, 0.0], [1.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]
)


@pytest.mark.parametrize("name", sorted(CONTRASTIVE_ESTIMATORS))
def test_gradients_flow(name):
    embeddings = _leaf((4, 4, 8), 0)
    loss, _ = make_contrastive_loss(name)(embeddings, REWARDS)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()
    assert embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(CONTRASTIVE_ESTIMATORS))
def test_sgd_on_free_embeddings_reduces_loss_and_aligns_positives(name):
    embeddings = _leaf((4, 4, 8), 1 + TEST_SEED)
    loss_fn = make_contrastive_loss(name)
    optimizer = torch.optim.SGD([embeddings], lr=0.5)
    first, first_stats = loss_fn(embeddings, REWARDS)
    for _ in range(15):
        optimizer.zero_grad()
        loss, stats = loss_fn(embeddings, REWARDS)
        loss.backward()
        optimizer.step()
    last, last_stats = loss_fn(embeddings, REWARDS)
    assert last.item() < first.item() - 0.1
    assert last_stats["pos_sim"] > first_stats["pos_sim"]


def test_moving_positives_together_lowers_reward_infonce():
    embeddings = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(2))
    rewards = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    loss_fn = RewardContrastiveLoss()
    before, _ = loss_fn(embeddings, rewards)
    moved = embeddings.clone()
    for q in range(3):
        winners = rewards[q] >= rewards[q].mean()
        center = moved[q][winners].mean(0)
        moved[q][winners] = 0.2 * moved[q][winners] + 0.8 * center
    after, _ = loss_fn(moved, rewards)
    assert after.item() < before.item()


@pytest.mark.parametrize("loss_cls", [MVInfoNCELoss, MVDHELLoss])
def test_too_few_instances_give_connected_zero(loss_cls):
    embeddings = _leaf((3, 4, 8), 0)
    rewards = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    loss, stats = loss_cls()(embeddings, rewards)
    assert loss.item() == 0.0 and stats["instances"] == 1
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_single_latent_gives_connected_zero():
    embeddings = _leaf((1, 1, 4), 0)
    loss, stats = RewardContrastiveLoss(skip_uniform_groups=False)(embeddings, torch.ones(1, 1))
    assert loss.item() == 0.0 and stats["anchors"] == 0
    loss.backward()


def test_select_views_treats_nan_as_not_rewarded():
    embeddings = torch.arange(8.0).reshape(1, 4, 2)
    rewards = torch.tensor([[float("nan"), 0.5, 2.0, 0.0]])
    views, questions = select_views(embeddings, rewards, 2)
    assert questions.tolist() == [0]
    assert views.tolist() == [[[4.0, 5.0], [2.0, 3.0]]]  # latents 2 then 1, never the NaN one
    assert select_views(embeddings, rewards, 3)[0].shape == (0, 3, 2)


def test_select_views_with_fewer_latents_than_views():
    views, questions = select_views(torch.randn(3, 2, 4), torch.ones(3, 2), 3)
    assert views.shape == (0, 3, 4) and questions.numel() == 0


def test_stats_are_floats_with_expected_keys():
    embeddings = torch.randn(4, 4, 8)
    for name, count_key in [("reward_infonce", "anchors"), ("mv_infonce", "instances")]:
        _, stats = make_contrastive_loss(name)(embeddings, REWARDS)
        assert set(stats) == {"contrastive_loss", count_key, "pos_sim", "neg_sim"}
        assert all(isinstance(value, float) for value in stats.values())


# ------------------------------------------------------------------ configuration


def test_registry_and_factory():
    expected = {
        "reward_infonce": RewardContrastiveLoss,
        "mv_infonce": MVInfoNCELoss,
        "mv_dhel": MVDHELLoss,
    }
    assert expected == CONTRASTIVE_ESTIMATORS
    assert make_contrastive_loss("mv_dhel", num_views=3) == MVDHELLoss(num_views=3)
    with pytest.raises(ValueError, match=r"'mv_dhel', 'mv_infonce', 'reward_infonce'"):
        make_contrastive_loss("supcon")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_views'\]"):
        make_contrastive_loss("reward_infonce", num_views=2)


@pytest.mark.parametrize("name", sorted(CONTRASTIVE_ESTIMATORS))
@pytest.mark.parametrize("tau", [0.0, -0.2, float("nan")])
def test_bad_tau(name, tau):
    with pytest.raises(ValueError, match=r"\.tau must be"):
        make_contrastive_loss(name, tau=tau)


@pytest.mark.parametrize("loss_cls", [MVInfoNCELoss, MVDHELLoss])
@pytest.mark.parametrize("num_views", [1, 0, 2.0, True])
def test_bad_num_views(loss_cls, num_views):
    with pytest.raises(ValueError, match=r"\.num_views must be an integer >= 2"):
        loss_cls(num_views=num_views)


@pytest.mark.parametrize("name", sorted(CONTRASTIVE_ESTIMATORS))
def test_bad_inputs(name):
    loss_fn = make_contrastive_loss(name)
    with pytest.raises(ValueError, match=r"embeddings must have shape \[Q, K, D\]"):
        loss_fn(torch.randn(4, 8), torch.ones(4))
    with pytest.raises(ValueError, match=r"rewards must have shape \[Q, K\]"):
        loss_fn(torch.randn(2, 3, 8), torch.ones(2, 4))
    with pytest.raises(ValueError, match="finite"):
        loss_fn(torch.randn(2, 3, 8), torch.tensor([[1.0, float("nan"), 0.0], [1.0, 1.0, 0.0]]))


# ------------------------------------------------------------------ properties


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(CONTRASTIVE_ESTIMATORS)),
    seed=st.integers(0, 2**16),
    scales=st.lists(st.floats(0.05, 20.0), min_size=12, max_size=12),
)
def test_invariant_to_positive_rescaling(name, seed, scales):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    rewards = torch.randint(0, 3, (3, 4), generator=g).double() * 0.5
    scaled = embeddings * torch.tensor(scales, dtype=torch.float64).reshape(3, 4, 1)
    loss_fn = make_contrastive_loss(name)
    loss, stats = loss_fn(embeddings, rewards)
    scaled_loss, scaled_stats = loss_fn(scaled, rewards)
    assert scaled_loss.item() == pytest.approx(loss.item(), abs=1e-9)
    assert scaled_stats == pytest.approx(stats, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), num_q=st.integers(1, 4), k=st.integers(1, 5))
def test_reward_infonce_is_finite_and_non_negative(seed, num_q, k):
    # Each term is -log of a probability (a positive's share of the denominator): >= 0.
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_q, k, 4, generator=g, requires_grad=True)
    rewards = torch.randint(0, 3, (num_q, k), generator=g).float()
    loss, stats = RewardContrastiveLoss(skip_uniform_groups=False)(embeddings, rewards)
    assert math.isfinite(loss.item()) and loss.item() >= 0
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


def test_reward_exactly_at_the_mean_is_a_positive():
    # rewards [0, 0.5, 1]: mean 0.5, so latent 1 (at the mean) and latent 2 are positives.
    from latentrl.losses import reward_positive_mask

    mask = reward_positive_mask(torch.tensor([[0.0, 0.5, 1.0]]))
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, True, False]]
    # 0.1 is inexact in binary and its float32 mean over 3 copies rounds; still all tie.
    assert reward_positive_mask(torch.full((1, 3), 0.1)).sum() == 6
