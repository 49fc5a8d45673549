"""LaSER's loss terms against naive references written from DESIGN.md's formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from latentrl.losses.retrieval import LaSERLoss, QueryViews, trajectory_indices

TAU, TRAJ_TAU = 0.5, 0.7  # large temperatures keep the naive float sums well conditioned


def naive_log_softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    total = sum(math.exp(s - top) for s in scores)
    return [s - top - math.log(total) for s in scores]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.tolist(), b.tolist()
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def naive_kl(p_log: list[float], q_log: list[float]) -> float:
    return sum(math.exp(p) * (p - q) for p, q in zip(p_log, q_log, strict=True))


def make_views(generator, batch=3, steps=3, max_segments=4, hidden=5, counts=(1, 3, 4)):
    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)

    states = torch.randn(batch, steps, hidden, generator=generator, dtype=torch.float64)
    segments = torch.randn(batch, max_segments, hidden, generator=generator, dtype=torch.float64)
    views = QueryViews(
        latent=F.normalize(states.mean(1), dim=-1),
        latent_states=states,
        explicit=unit(batch, hidden),
        segment_states=segments,
        segment_counts=torch.tensor(counts),
    )
    return views, unit(7, hidden), torch.tensor([0, 2, 5])


def test_every_term_matches_the_formulas():
    views, docs, positives = make_views(torch.Generator().manual_seed(0))
    loss_fn = LaSERLoss(
        tau=TAU, distill_weight=10.0, trajectory_weight=0.1, trajectory_tau=TRAJ_TAU
    )
    loss, stats = loss_fn(views, docs, positives)

    latent_nce = explicit_nce = distill = trajectory = 0.0
    batch, steps = views.latent_states.shape[:2]
    for b in range(batch):
        latent = naive_log_softmax([cosine(views.latent[b], d) / TAU for d in docs])
        explicit = naive_log_softmax([cosine(views.explicit[b], d) / TAU for d in docs])
        latent_nce -= latent[positives[b]] / batch
        explicit_nce -= explicit[positives[b]] / batch
        distill += naive_kl(explicit, latent) / batch
        m = int(views.segment_counts[b])
        for i in range(steps):
            j = round((m - 1) * i / (steps - 1))  # linspace(0, M-1, K)[i], rounded
            segment = naive_log_softmax(
                [cosine(views.segment_states[b, j], d) / TRAJ_TAU for d in docs]
            )
            step = naive_log_softmax(
                [cosine(views.latent_states[b, i], d) / TRAJ_TAU for d in docs]
            )
            trajectory += naive_kl(segment, step) / (batch * steps)

    assert stats["latent_nce"] == pytest.approx(latent_nce, rel=1e-9)
    assert stats["explicit_nce"] == pytest.approx(explicit_nce, rel=1e-9)
    assert stats["distill_kl"] == pytest.approx(distill, rel=1e-9)
    assert stats["trajectory_kl"] == pytest.approx(trajectory, rel=1e-9)
    total = latent_nce + explicit_nce + 10.0 * distill + 0.1 * trajectory
    assert loss.item() == pytest.approx(total, rel=1e-9)


def test_distillation_reads_its_own_temperature_when_set():
    views, docs, positives = make_views(torch.Generator().manual_seed(4))
    distill_tau = 1.3
    _, stats = LaSERLoss(tau=TAU, distill_tau=distill_tau)(views, docs, positives)
    expected = 0.0
    for b in range(len(positives)):
        teacher = naive_log_softmax([cosine(views.explicit[b], d) / distill_tau for d in docs])
        student = naive_log_softmax([cosine(views.latent[b], d) / distill_tau for d in docs])
        expected += naive_kl(teacher, student) / len(positives)
    assert stats["distill_kl"] == pytest.approx(expected, rel=1e-9)
    # Both InfoNCE terms keep tau.
    assert stats["latent_nce"] == pytest.approx(
        F.cross_entropy(views.latent @ docs.T / TAU, positives).item(), rel=1e-9
    )


def test_plain_infonce_needs_no_explicit_view():
    views, docs, positives = make_views(torch.Generator().manual_seed(1))
    plain = LaSERLoss(tau=TAU, explicit_weight=0, distill_weight=0, trajectory_weight=0)
    loss, stats = plain(views._replace(explicit=None, segment_states=None), docs, positives)
    assert sorted(stats) == ["latent_batch_accuracy", "latent_nce", "loss"]
    assert loss.item() == pytest.approx(
        F.cross_entropy(views.latent @ docs.T / TAU, positives).item()
    )
    with pytest.raises(ValueError, match="the explicit view is needed by a non-zero weight"):
        LaSERLoss()(views._replace(explicit=None), docs, positives)


def explicit_gradient(views, docs, positives, distill_weight):
    explicit = views.explicit.clone().requires_grad_(True)
    latent = views.latent.clone().requires_grad_(True)
    loss_fn = LaSERLoss(tau=TAU, distill_weight=distill_weight, trajectory_weight=0)
    loss_fn(views._replace(explicit=explicit, latent=latent), docs, positives)[0].backward()
    return explicit.grad, latent.grad


def test_distillation_sends_no_gradient_to_the_teacher():
    views, docs, positives = make_views(torch.Generator().manual_seed(2))
    teacher_without, student_without = explicit_gradient(views, docs, positives, 0.0)
    teacher_with, student_with = explicit_gradient(views, docs, positives, 10.0)
    # The explicit view's gradient is its own InfoNCE's alone; the student's changes.
    assert torch.equal(teacher_with, teacher_without)
    assert not torch.allclose(student_with, student_without)


def test_trajectory_alignment_sends_no_gradient_to_the_segments():
    views, docs, positives = make_views(torch.Generator().manual_seed(3))
    states = views.latent_states.clone().requires_grad_(True)
    segments = views.segment_states.clone().requires_grad_(True)
    views = views._replace(latent_states=states, segment_states=segments)
    only_trajectory = LaSERLoss(
        tau=TAU, latent_weight=0, explicit_weight=0, distill_weight=0, trajectory_weight=1
    )
    only_trajectory(views, docs, positives)[0].backward()
    assert segments.grad is None
    assert states.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("segments", "steps", "expected"),
    [
        (2, 3, [0, 0, 1]),  # M < K: the first segment serves two steps (0.5 rounds to even)
        (1, 3, [0, 0, 0]),
        (3, 3, [0, 1, 2]),  # M = K: one to one
        (4, 3, [0, 2, 3]),  # M > K: 1.5 rounds to 2
        (7, 3, [0, 3, 6]),
        (5, 1, [0]),
    ],
)
def test_trajectory_mapping(segments, steps, expected):
    assert trajectory_indices(segments, steps).tolist() == expected


def test_trajectory_mapping_rejects_empty_inputs():
    with pytest.raises(ValueError, match="need at least one segment and one step, got M=0, K=3"):
        trajectory_indices(0, 3)
