r"""Contrastive losses on latents grouped by question (DLR, DESIGN item 7).

A batch holds K latents for each of Q questions, ``embeddings [Q, K, D]``, with their rewards
``rewards [Q, K]``. Three estimators share one call signature,
``loss_fn(embeddings, rewards) -> (loss, stats)``:

- ``"reward_infonce"`` (:class:`RewardContrastiveLoss`): supervised InfoNCE where a latent's
  positives are its question's latents at or above the group's mean reward;
- ``"mv_infonce"`` (:class:`MVInfoNCELoss`) and ``"mv_dhel"`` (:class:`MVDHELLoss`): the
  multi-view losses of "A Principled Framework for Multi-View Contrastive Learning"; a
  question's views are its R highest-reward latents (:func:`select_views`).

Notation: :math:`u = e / \|e\|` and :math:`s(a, b) = u_a \cdot u_b / \tau`. Everything is
computed in log space (``logsumexp``) and vectorised over the batch. Since embeddings are
L2-normalised first, every loss is invariant to a positive rescaling of each embedding.

>>> import torch
>>> loss_fn = make_contrastive_loss("mv_dhel", tau=0.2, num_views=2)
>>> embeddings = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(0))
>>> rewards = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
>>> loss, stats = loss_fn(embeddings, rewards)
>>> stats["instances"]  # questions 0 and 1 have 2 rewarded latents
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CONTRASTIVE_ESTIMATORS",
    "ContrastiveLoss",
    "MVDHELLoss",
    "MVInfoNCELoss",
    "RewardContrastiveLoss",
    "make_contrastive_loss",
    "mv_dhel",
    "mv_infonce",
    "reward_contrastive",
    "reward_positive_mask",
    "select_views",
]


class ContrastiveLoss(Protocol):
    """``loss_fn(embeddings [Q, K, D], rewards [Q, K]) -> (loss, stats)``."""

    def __call__(self, embeddings: Tensor, rewards: Tensor) -> tuple[Tensor, dict[str, float]]: ...


def _check_inputs(owner: str, embeddings: Tensor, rewards: Tensor) -> None:
    if embeddings.ndim != 3:
        raise ValueError(
            f"{owner}: embeddings must have shape [Q, K, D], got {tuple(embeddings.shape)}"
        )
    if rewards.shape != embeddings.shape[:2]:
        raise ValueError(
            f"{owner}: rewards must have shape [Q, K] = {tuple(embeddings.shape[:2])}, "
            f"got {tuple(rewards.shape)}"
        )
    if not torch.isfinite(rewards).all():
        # The contrastive losses are computed on decoded, judged latents only; drop or
        # impute "not judged" (NaN) rewards before, where that choice is visible.
        raise ValueError(f"{owner}: rewards must all be finite (judged latents only)")


def _check_tau(owner: str, tau: float) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
        raise ValueError(f"{owner}.tau must be a finite number, got {tau!r}")
    if tau <= 0:
        raise ValueError(f"{owner}.tau must be > 0, got {tau!r}")


def _check_num_views(owner: str, num_views: int) -> None:
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"{owner}.num_views must be an integer >= 2, got {num_views!r}")


def _zero_loss(embeddings: Tensor) -> Tensor:
    """A scalar 0 that is still part of ``embeddings``' graph, so ``backward()`` works."""
    return embeddings.sum() * 0.0


def _stats(values: dict[str, Tensor | float]) -> dict[str, float]:
    """Detached floats with a single device sync."""
    tensors = [torch.as_tensor(v).detach().float().cpu() for v in values.values()]
    return dict(zip(values, torch.stack(tensors).tolist(), strict=True))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 when the mask is empty."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


# --------------------------------------------------------------------------------------------
# Reward-contrastive (supervised InfoNCE)
# --------------------------------------------------------------------------------------------


def reward_positive_mask(rewards: Tensor) -> Tensor:
    r"""``P[a, b]``: True when latent b is a positive of anchor a, over the flattened batch.

    Latents are flattened question-major (``a = q * K + k``). b is a positive of a when both
    belong to the same question q, ``b != a`` and ``r_b >= mean(r_q)``.

    "At or above the mean" is decided exactly as :math:`K r_b \ge \sum_k r_{qk}` in float64
    (exact for float32 rewards), so ties at the mean, e.g. every latent of an all-equal
    group, are positives regardless of rounding in the mean.

    Args:
        rewards: ``[Q, K]`` rewards.

    Returns:
        ``[Q*K, Q*K]`` boolean mask.

    >>> import torch
    >>> reward_positive_mask(torch.tensor([[1.0, 0.0, 1.0]])).int()  # row a, column b
    tensor([[0, 0, 1],
            [1, 0, 1],
            [1, 0, 0]], dtype=torch.int32)
    """
    num_q, k = rewards.shape
    r = rewards.double()
    at_or_above = k * r >= r.sum(dim=1, keepdim=True)  # [Q, K]
    question = torch.arange(num_q, device=rewards.device).repeat_interleave(k)  # [M]
    same_question = question[:, None] == question[None, :]  # [M, M]
    not_self = ~torch.eye(num_q * k, dtype=torch.bool, device=rewards.device)  # [M, M]
    return same_question & not_self & at_or_above.reshape(1, -1)


def reward_contrastive(
    embeddings: Tensor, rewards: Tensor, tau: float = 0.2, skip_uniform_groups: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Per-anchor reward-contrastive (supervised InfoNCE) losses.

    For anchor a of question q, with positives :math:`P(a)` from :func:`reward_positive_mask`:

    .. math::
        \ell_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)}
                 \log \frac{e^{s(a, p)}}{\sum_{b \ne a} e^{s(a, b)}}

    where b ranges over all other latents of the batch, every question included. Latents of
    other questions and the below-mean latents of q only ever appear in the denominator:
    they are the negatives ("bidirectional": toward success, away from failure). Note that
    :math:`P(a)` does not depend on a's own reward: a below-mean anchor is pulled toward its
    group's successful latents too, which is what moves failures toward success.

    An anchor is used when :math:`|P(a)| > 0` and, with ``skip_uniform_groups``, its group's
    rewards are not all equal. In an all-equal group every latent is "at or above the mean",
    so the literal formula would pull the whole group together although the rewards say
    nothing about which latents are better: no reward signal to contrast.

    Args:
        embeddings: ``[Q, K, D]`` latents (any scale: they are L2-normalised).
        rewards: ``[Q, K]`` finite rewards.
        tau: temperature (> 0).
        skip_uniform_groups: skip anchors of groups with zero reward spread.

    Returns:
        ``(losses [Q*K], used [Q*K], positives [Q*K, Q*K], cosine [Q*K, Q*K])``: per-anchor
        losses (0 where unused), which anchors are used, the positive mask and the cosine
        similarities (detached), flattened question-major.
    """
    num_q, k, _ = embeddings.shape
    u = F.normalize(embeddings.reshape(num_q * k, -1), dim=-1)  # [M, D]
    cosine = u @ u.T  # [M, M]
    not_self = ~torch.eye(num_q * k, dtype=torch.bool, device=u.device)  # [M, M]
    logits = (cosine / tau).masked_fill(~not_self, -math.inf)  # [M, M]
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [M, M]

    positives = reward_positive_mask(rewards)  # [M, M]
    num_pos = positives.sum(dim=1)  # [M]
    # where (not multiply): the diagonal is -inf and -inf * 0 would be NaN.
    pos_log_prob = torch.where(positives, log_prob, 0.0).sum(dim=1)  # [M]
    losses = -pos_log_prob / num_pos.clamp_min(1)  # [M]

    used = num_pos > 0  # [M]
    if skip_uniform_groups:
        spread = rewards.amax(dim=1) > rewards.amin(dim=1)  # [Q]
        used = used & spread.repeat_interleave(k)
    return torch.where(used, losses, 0.0), used, positives, cosine.detach()


@dataclass(frozen=True)
class RewardContrastiveLoss:
    r"""Supervised InfoNCE with reward-defined positives (``"reward_infonce"``).

    ``loss = mean of`` :math:`\ell_a` (see :func:`reward_contrastive`) over the used anchors;
    0, connected to the graph, when no anchor is used.

    Stats: ``contrastive_loss``, ``anchors`` (number used), ``pos_sim`` (mean cosine
    similarity over the used anchors' positive pairs) and ``neg_sim`` (mean cosine over their
    other pairs ``b != a``, i.e. other questions and below-mean latents of the group); the
    similarities are 0 when no anchor is used.

    >>> import torch
    >>> loss_fn = RewardContrastiveLoss()
    >>> embeddings = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]])
    >>> loss, stats = loss_fn(embeddings, torch.tensor([[1.0, 1.0, 0.0]]))
    >>> stats["anchors"]  # all three have positives (the two latents with reward 1)
    3.0
    """

    tau: float = 0.2
    """Temperature of the similarities (> 0)."""
    skip_uniform_groups: bool = True
    """Skip anchors of groups whose rewards are all equal (no reward signal to contrast)."""

    def __post_init__(self) -> None:
        _check_tau("RewardContrastiveLoss", self.tau)

    def __call__(self, embeddings: Tensor, rewards: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Loss and stats for ``embeddings [Q, K, D]`` with ``rewards [Q, K]``."""
        _check_inputs("RewardContrastiveLoss", embeddings, rewards)
        if embeddings.shape[0] * embeddings.shape[1] < 2:
            # A single latent has no pair at all; the logsumexp over an empty row would be -inf.
            zero = _zero_loss(embeddings)
            return zero, _stats(
                {"contrastive_loss": zero, "anchors": 0, "pos_sim": 0, "neg_sim": 0}
            )
        losses, used, positives, cosine = reward_contrastive(
            embeddings, rewards, self.tau, self.skip_uniform_groups
        )
        loss = losses.sum() / used.sum().clamp_min(1)
        not_self = ~torch.eye(len(used), dtype=torch.bool, device=used.device)
        negatives = not_self & ~positives  # [M, M]
        stats = _stats(
            {
                "contrastive_loss": loss,
                "anchors": used.sum(),
                "pos_sim": _masked_mean(cosine, positives & used[:, None]),
                "neg_sim": _masked_mean(cosine, negatives & used[:, None]),
            }
        )
        return loss, stats


# --------------------------------------------------------------------------------------------
# Multi-view estimators
# --------------------------------------------------------------------------------------------


def select_views(embeddings: Tensor, rewards: Tensor, num_views: int) -> tuple[Tensor, Tensor]:
    """The views of each usable question: its ``num_views`` highest-reward latents.

    A question is usable when at least ``num_views`` of its latents are rewarded
    (``reward > 0``; NaN counts as not rewarded), so every selected view is rewarded. Ties
    in reward keep the lower latent index first (stable sort).

    Args:
        embeddings: ``[Q, K, D]`` latents.
        rewards: ``[Q, K]`` rewards.
        num_views: R >= 2.

    Returns:
        ``(views [I, R, D], questions [I])``: the views in decreasing reward order and the
        index of the question each instance came from.

    >>> import torch
    >>> embeddings = torch.arange(12.0).reshape(2, 3, 2)
    >>> views, questions = select_views(embeddings, torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]), 2)
    >>> views.tolist(), questions.tolist()
    ([[[4.0, 5.0], [2.0, 3.0]]], [0])
    """
    _check_num_views("select_views", num_views)
    num_q, k, dim = embeddings.shape
    if rewards.shape != (num_q, k):
        raise ValueError(
            f"select_views: rewards must have shape [Q, K] = {(num_q, k)}, got {tuple(rewards.shape)}"
        )
    if k < num_views:
        return embeddings.new_zeros(0, num_views, dim), torch.zeros(
            0, dtype=torch.long, device=embeddings.device
        )
    rewarded = (rewards > 0).sum(dim=1)  # [Q]
    questions = torch.nonzero(rewarded >= num_views).squeeze(1)  # [I]
    ranked = torch.where(torch.isnan(rewards), -math.inf, rewards)  # [Q, K]
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices  # [Q, K]
    top = order[questions, :num_views]  # [I, R]
    return embeddings[questions[:, None], top], questions


def mv_infonce(views: Tensor, tau: float = 0.2) -> Tensor:
    r"""Per-instance MV-InfoNCE losses.

    .. math::
        \ell_i = -\log \frac{2 \sum_{l < l'} e^{s(il, il')}}
                 {\sum_l \sum_{(j, m) \ne (i, l)} e^{s(il, jm)}}

    One term per instance: all positive pairs share one numerator and all anchors one
    denominator. With V = 2 this is **not** the usual per-anchor InfoNCE (NT-Xent) average
    :math:`-s(i1,i2) + \tfrac12(\log D_{i1} + \log D_{i2})`: it is
    :math:`-s(i1,i2) + \log\tfrac12(D_{i1} + D_{i2})`, larger by Jensen unless the two
    anchors' denominators :math:`D_{il}` are equal.

    Args:
        views: ``[I, V, D]`` views (any scale: they are L2-normalised), I >= 1, V >= 2.
        tau: temperature.

    Returns:
        ``[I]`` losses.
    """
    num_i, num_v, _ = views.shape
    u = F.normalize(views, dim=-1)  # [I, V, D]
    flat = u.reshape(num_i * num_v, -1)  # [I*V, D]
    eye_v = torch.eye(num_v, dtype=torch.bool, device=views.device)  # [V, V]
    # Numerator: 2 * sum_{l<l'} = sum_{l != l'} (the Gram block is symmetric).
    within = torch.einsum("ivd,iwd->ivw", u, u) / tau  # [I, V, V]
    numerator = torch.logsumexp(within.masked_fill(eye_v, -math.inf).flatten(1), dim=1)  # [I]
    # Denominator: every other view of every instance, for each anchor (i, l), summed over l.
    eye_iv = torch.eye(num_i * num_v, dtype=torch.bool, device=views.device)  # [I*V, I*V]
    logits = (flat @ flat.T / tau).masked_fill(eye_iv, -math.inf)  # [I*V, I*V]
    per_anchor = torch.logsumexp(logits, dim=1).reshape(num_i, num_v)  # [I, V]
    denominator = torch.logsumexp(per_anchor, dim=1)  # [I]
    return denominator - numerator


def mv_dhel(views: Tensor, tau: float = 0.2) -> Tensor:
    r"""Per-instance MV-DHEL losses (decoupled hyperspherical energy).

    .. math::
        \ell_i = -\log \frac{\sum_{l < l'} e^{s(il, il')}}
                 {\prod_l \sum_{j \ne i} e^{s(il, jl)}}

    Uniformity is only among the same view of other instances (no view of instance i in any
    denominator). With V = 2 this is exactly DHEL:
    :math:`-s(i1, i2) + \log\sum_{j \ne i} e^{s(i1, j1)} + \log\sum_{j \ne i} e^{s(i2, j2)}`.

    Args:
        views: ``[I, V, D]`` views (any scale: they are L2-normalised), I >= 2, V >= 2.
        tau: temperature.

    Returns:
        ``[I]`` losses.
    """
    num_i, num_v, _ = views.shape
    u = F.normalize(views, dim=-1)  # [I, V, D]
    pairs = torch.ones(num_v, num_v, dtype=torch.bool, device=views.device).triu(1)  # [V, V]
    within = torch.einsum("ivd,iwd->ivw", u, u) / tau  # [I, V, V]
    numerator = torch.logsumexp(within.masked_fill(~pairs, -math.inf).flatten(1), dim=1)  # [I]
    eye_i = torch.eye(num_i, dtype=torch.bool, device=views.device)  # [I, I]
    same_view = torch.einsum("ivd,jvd->vij", u, u) / tau  # [V, I, I]
    # log of the product over l = sum over l of each view's log-denominator.
    denominator = torch.logsumexp(same_view.masked_fill(eye_i, -math.inf), dim=2).sum(0)  # [I]
    return denominator - numerator


@dataclass(frozen=True)
class _MultiViewLoss:
    tau: float = 0.2
    """Temperature of the similarities (> 0)."""
    num_views: int = 2
    """Views per question R (>= 2): its R highest-reward latents, all with reward > 0."""

    def __post_init__(self) -> None:
        _check_tau(type(self).__name__, self.tau)
        _check_num_views(type(self).__name__, self.num_views)

    def _per_instance(self, views: Tensor) -> Tensor:
        raise NotImplementedError

    def _negatives(self, num_i: int, device: torch.device) -> Tensor:
        """``[I*V, I*V]`` mask of the pairs this estimator's denominator treats as negatives."""
        raise NotImplementedError

    def __call__(self, embeddings: Tensor, rewards: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Loss and stats for ``embeddings [Q, K, D]`` with ``rewards [Q, K]``."""
        name = type(self).__name__
        _check_inputs(name, embeddings, rewards)
        views, _ = select_views(embeddings, rewards, self.num_views)  # [I, R, D]
        num_i = views.shape[0]
        if num_i < 2:
            # No other instance to contrast with (DHEL's denominator would be an empty sum).
            zero = _zero_loss(embeddings)
            stats = {"contrastive_loss": zero, "instances": num_i, "pos_sim": 0, "neg_sim": 0}
            return zero, _stats(stats)
        loss = self._per_instance(views).mean()
        with torch.no_grad():
            flat = F.normalize(views, dim=-1).flatten(0, 1)  # [I*R, D]
            cosine = flat @ flat.T  # [I*R, I*R]
            instance = torch.arange(num_i, device=views.device).repeat_interleave(self.num_views)
            same = instance[:, None] == instance[None, :]
            positives = same & ~torch.eye(len(flat), dtype=torch.bool, device=views.device)
            negatives = self._negatives(num_i, views.device)
        stats = {
            "contrastive_loss": loss,
            "instances": num_i,
            "pos_sim": _masked_mean(cosine, positives),
            "neg_sim": _masked_mean(cosine, negatives),
        }
        return loss, _stats(stats)


@dataclass(frozen=True)
class MVInfoNCELoss(_MultiViewLoss):
    r"""MV-InfoNCE over each usable question's views (``"mv_infonce"``); see :func:`mv_infonce`.

    ``loss = mean_i`` :math:`\ell_i` over the I instances from :func:`select_views`; 0,
    connected to the graph, when I < 2.

    Stats: ``contrastive_loss``, ``instances`` (I, usable questions), ``pos_sim`` (mean
    cosine between views of the same instance) and ``neg_sim`` (mean cosine between views
    of different instances, any view: this estimator's negatives); similarities are 0 when
    I < 2.
    """

    def _per_instance(self, views: Tensor) -> Tensor:
        return mv_infonce(views, self.tau)

    def _negatives(self, num_i: int, device: torch.device) -> Tensor:
        instance = torch.arange(num_i, device=device).repeat_interleave(self.num_views)
        return instance[:, None] != instance[None, :]


@dataclass(frozen=True)
class MVDHELLoss(_MultiViewLoss):
    r"""MV-DHEL over each usable question's views (``"mv_dhel"``); see :func:`mv_dhel`.

    ``loss = mean_i`` :math:`\ell_i` over the I instances from :func:`select_views`; 0,
    connected to the graph, when I < 2.

    Stats: ``contrastive_loss``, ``instances`` (I), ``pos_sim`` (mean cosine between views of
    the same instance) and ``neg_sim`` (mean cosine between the same view of different
    instances: this estimator's negatives); similarities are 0 when I < 2.
    """

    def _per_instance(self, views: Tensor) -> Tensor:
        return mv_dhel(views, self.tau)

    def _negatives(self, num_i: int, device: torch.device) -> Tensor:
        instance = torch.arange(num_i, device=device).repeat_interleave(self.num_views)
        view = torch.arange(self.num_views, device=device).repeat(num_i)
        return (instance[:, None] != instance[None, :]) & (view[:, None] == view[None, :])


CONTRASTIVE_ESTIMATORS: dict[str, type[ContrastiveLoss]] = {
    "reward_infonce": RewardContrastiveLoss,
    "mv_infonce": MVInfoNCELoss,
    "mv_dhel": MVDHELLoss,
}
"""Contrastive loss classes by config name."""


def make_contrastive_loss(name: str, **kwargs: Any) -> ContrastiveLoss:
    """A contrastive loss by registry name, with its hyper-parameters.

    >>> make_contrastive_loss("mv_infonce", tau=0.1)
    MVInfoNCELoss(tau=0.1, num_views=2)
    >>> make_contrastive_loss("simclr")
    Traceback (most recent call last):
    ...
    ValueError: unknown contrastive estimator 'simclr'; known estimators: ['mv_dhel', 'mv_infonce', 'reward_infonce']
    >>> make_contrastive_loss("mv_dhel", views=3)
    Traceback (most recent call last):
    ...
    ValueError: unknown option(s) ['views'] for contrastive estimator 'mv_dhel'; known options: ['num_views', 'tau']
    """
    if name not in CONTRASTIVE_ESTIMATORS:
        raise ValueError(
            f"unknown contrastive estimator {name!r}; "
            f"known estimators: {sorted(CONTRASTIVE_ESTIMATORS)}"
        )
    cls = CONTRASTIVE_ESTIMATORS[name]
    known = sorted(field.name for field in fields(cls))  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for contrastive estimator {name!r}; known options: {known}"
        )
    return cls(**kwargs)
