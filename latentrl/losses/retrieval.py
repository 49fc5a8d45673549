r"""LaSER's objective: two views' InfoNCE, output distillation and trajectory alignment.

With unit-norm query vectors q and document vectors d (the batch's positives and hard
negatives, N in all) and S = q d^T:

    loss = w_lat * CE(S_latent / tau) + w_exp * CE(S_explicit / tau)
         + w_kd  * KL(p_explicit || p_latent)          p = softmax(S / tau_kd), teacher detached
         + w_traj * L_traj

tau_kd is ``distill_tau``, ``tau`` itself unless set (the paper uses one temperature).

L_traj aligns latent step i (of K) with explicit segment j_i = round(linspace(0, M-1, K)[i])
(of the query's M rationale segments) by KL(p_segment || p_step) over the batch's
documents at temperature ``trajectory_tau``, the segment side detached like the teacher.

>>> import torch
>>> trajectory_indices(num_segments=5, num_steps=3).tolist()
[0, 2, 4]
>>> docs = torch.eye(2)
>>> views = QueryViews(docs, docs[:, None], None, None, None)  # each query = its document
>>> loss, stats = LaSERLoss(explicit_weight=0, distill_weight=0, trajectory_weight=0)(
...     views, docs, torch.tensor([0, 1]))
>>> round(stats["latent_nce"], 6), stats["latent_batch_accuracy"]  # positive 1/0.02 above
(0.0, 1.0)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class QueryViews(NamedTuple):
    """Both views of a batch of B queries (vectors unit-norm, states raw)."""

    latent: Tensor  # [B, H] mean of the K latent states, normalised
    latent_states: Tensor  # [B, K, H] the <EOS> state and each soft token's state
    explicit: Tensor | None  # [B, H] last state of query + rationale + <EOS>, normalised
    segment_states: Tensor | None  # [B, M_max, H] state at the end of each rationale segment
    segment_counts: Tensor | None  # [B] M of each query (rows are padded to M_max)


def score_log_probs(queries: Tensor, documents: Tensor, tau: float) -> Tensor:
    """log softmax over documents of cosine scores / tau: [..., H] x [N, H] -> [..., N]."""
    scores = F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T
    return torch.log_softmax(scores / tau, dim=-1)


def kl_divergence(teacher_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """KL(teacher || student) summed over the last axis: [..., N] -> [...]."""
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)


def trajectory_indices(num_segments: int, num_steps: int) -> Tensor:
    """j_i = round(linspace(0, M-1, K)[i]): the explicit segment aligned with latent step i.

    M < K repeats segments, M = K pairs them one to one, M > K skips some; the first step
    always meets the first segment and the last step the last one.
    """
    if num_segments < 1 or num_steps < 1:
        raise ValueError(
            f"need at least one segment and one step, got M={num_segments}, K={num_steps}"
        )
    return torch.linspace(0, num_segments - 1, num_steps).round().long()


def trajectory_alignment(
    latent_states: Tensor,
    segment_states: Tensor,
    segment_counts: Tensor,
    documents: Tensor,
    tau: float,
) -> Tensor:
    """Mean over queries and steps of KL(p_segment(j_i) || p_step(i)); segments detached.

    latent_states [B, K, H], segment_states [B, M_max, H], segment_counts [B], documents [N, H].
    """
    num_steps = latent_states.shape[1]
    picks = torch.stack(
        [trajectory_indices(int(m), num_steps) for m in segment_counts.tolist()]
    ).to(segment_states.device)  # [B, K]
    aligned = segment_states.gather(
        1, picks[..., None].expand(-1, -1, segment_states.shape[-1])
    )  # [B, K, H]
    teacher = score_log_probs(aligned.detach(), documents.detach(), tau)  # [B, K, N]
    student = score_log_probs(latent_states, documents, tau)
    return kl_divergence(teacher, student).mean()


class LaSERLoss:
    """The weighted sum above; returns ``(loss, stats)`` with stats detached floats.

    A weight of 0 skips its term; with ``explicit``, ``distill`` and ``trajectory`` weights
    all 0 this is plain InfoNCE on the latent view, and the explicit view may be None.
    """

    def __init__(
        self,
        tau: float = 0.02,
        latent_weight: float = 1.0,
        explicit_weight: float = 1.0,
        distill_weight: float = 10.0,
        trajectory_weight: float = 0.1,
        trajectory_tau: float = 0.05,
        distill_tau: float | None = None,
    ) -> None:
        distill_tau = tau if distill_tau is None else distill_tau
        if min(tau, trajectory_tau, distill_tau) <= 0:
            raise ValueError("LaSERLoss: temperatures must be positive")
        self.tau = tau
        self.distill_tau = distill_tau
        self.latent_weight = latent_weight
        self.explicit_weight = explicit_weight
        self.distill_weight = distill_weight
        self.trajectory_weight = trajectory_weight
        self.trajectory_tau = trajectory_tau

    def __call__(
        self, views: QueryViews, documents: Tensor, positives: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """views of B queries, documents [N, H] unit-norm, positives [B] -> loss, stats."""
        latent_scores = views.latent @ documents.T  # [B, N]
        latent_nce = F.cross_entropy(latent_scores / self.tau, positives)
        loss = self.latent_weight * latent_nce
        stats = {
            "latent_nce": latent_nce.item(),
            "latent_batch_accuracy": _accuracy(latent_scores, positives),
        }
        if self.explicit_weight or self.distill_weight or self.trajectory_weight:
            if views.explicit is None or views.segment_states is None:
                raise ValueError("LaSERLoss: the explicit view is needed by a non-zero weight")
            explicit_scores = views.explicit @ documents.T
            explicit_nce = F.cross_entropy(explicit_scores / self.tau, positives)
            teacher = torch.log_softmax(explicit_scores.detach() / self.distill_tau, dim=-1)
            student = torch.log_softmax(latent_scores / self.distill_tau, dim=-1)
            distill = kl_divergence(teacher, student).mean()
            trajectory = trajectory_alignment(
                views.latent_states,
                views.segment_states,
                views.segment_counts,
                documents,
                self.trajectory_tau,
            )
            loss = (
                loss
                + self.explicit_weight * explicit_nce
                + self.distill_weight * distill
                + self.trajectory_weight * trajectory
            )
            stats |= {
                "explicit_nce": explicit_nce.item(),
                "distill_kl": distill.item(),
                "trajectory_kl": trajectory.item(),
                "explicit_batch_accuracy": _accuracy(explicit_scores, positives),
            }
        stats["loss"] = loss.item()
        return loss, stats


def _accuracy(scores: Tensor, positives: Tensor) -> float:
    return (scores.argmax(-1) == positives).float().mean().item()
