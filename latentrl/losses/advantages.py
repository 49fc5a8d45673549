"""Group-relative advantage estimators (GRPO, RLOO) as pure registered functions, verl style.

Every estimator takes the rewards of G samples for each of Q questions and returns one
advantage per sample, same shape::

    fn(rewards: Tensor[Q, G], **options) -> Tensor[Q, G]

NaN in ``rewards`` means "not judged" (a reward function returned None): such a sample gets
advantage 0 and is left out of its group's statistics, so "unknown" never acts as a reward
of 0. A group whose judged rewards are all equal carries no learning signal; its advantages
are exactly 0 (not ``+-ulp / eps`` from rounding in the mean).

A config picks an estimator by name:

>>> import torch
>>> estimator = get_advantage_estimator("rloo")
>>> estimator(torch.tensor([[1.0, 0.0, 0.0]]))
tensor([[ 1.0000, -0.5000, -0.5000]])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdvantageEstimator",
    "get_advantage_estimator",
    "group_advantages",
    "register_advantage_estimator",
    "rloo_advantages",
]


# ``fn(rewards [Q, G], **options) -> advantages [Q, G]``; options differ per estimator, so
# the signature past ``rewards`` is left open.
AdvantageEstimator = Callable[..., Tensor]


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
"""Registered estimators by name (filled by :func:`register_advantage_estimator`)."""


def register_advantage_estimator(
    name: str,
) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator adding an estimator to :data:`ADVANTAGE_ESTIMATORS` under ``name``."""

    def decorate(fn: AdvantageEstimator) -> AdvantageEstimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return decorate


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under ``name``.

    >>> get_advantage_estimator("gae")
    Traceback (most recent call last):
    ...
    ValueError: unknown advantage estimator 'gae'; known estimators: ['grpo', 'rloo']
    """
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"unknown advantage estimator {name!r}; known estimators: {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    return ADVANTAGE_ESTIMATORS[name]


def _group_stats(rewards: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Judged mask, judged count, mean, centred rewards and "has spread" per group.

    Returns ``judged [Q, G]``, ``count [Q, 1]``, ``mean [Q, 1]``, ``centred [Q, G]`` (0 where
    not judged) and ``spread [Q, 1]`` (True when the judged rewards are not all equal).
    """
    if rewards.ndim != 2:
        raise ValueError(
            f"rewards must have shape [Q, G] (questions x samples), got {tuple(rewards.shape)}"
        )
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    judged = ~torch.isnan(rewards)  # [Q, G]
    if torch.isinf(rewards).any():
        raise ValueError("rewards must be finite or NaN (not judged), got an infinite reward")
    count = judged.sum(dim=1, keepdim=True)  # [Q, 1]
    zeroed = torch.where(judged, rewards, 0.0)  # [Q, G]
    mean = zeroed.sum(dim=1, keepdim=True) / count.clamp_min(1)  # [Q, 1]
    centred = torch.where(judged, rewards - mean, 0.0)  # [Q, G]
    # Spread decided exactly on max != min: a rounding error in `mean` must not turn an
    # all-equal group into tiny non-zero advantages (which dividing by eps would blow up).
    high = torch.where(judged, rewards, -math.inf).amax(dim=1, keepdim=True)  # [Q, 1]
    low = torch.where(judged, rewards, math.inf).amin(dim=1, keepdim=True)  # [Q, 1]
    spread = (count >= 2) & (high > low)  # [Q, 1]
    return judged, count, mean, centred, spread


@register_advantage_estimator("grpo")
def group_advantages(rewards: Tensor, normalize_std: bool = True, eps: float = 1e-6) -> Tensor:
    r"""GRPO advantages: each reward standardised within its question's group.

    .. math::
        A_{qg} = \frac{r_{qg} - \mu_q}{\sigma_q + \varepsilon}, \quad
        \mu_q = \frac{1}{n_q}\sum_{g \in J_q} r_{qg}, \quad
        \sigma_q = \sqrt{\frac{1}{n_q}\sum_{g \in J_q} (r_{qg} - \mu_q)^2}

    where :math:`J_q` is the set of judged (non-NaN) samples of question q and
    :math:`n_q = |J_q|`. With ``normalize_std=False`` only the mean is subtracted
    (Dr. GRPO: no per-question rescaling).

    :math:`\sigma_q` is the **population** standard deviation (divide by :math:`n_q`), not
    Bessel's unbiased one that TRL and verl use (divide by :math:`n_q - 1`): it is defined
    for every group, including one with a single judged sample, and makes each group's
    judged advantages have mean 0 and variance exactly 1 (up to eps). The two differ by the
    factor :math:`\sqrt{(n_q - 1) / n_q}`, a constant learning-rate change for a fixed G.

    Args:
        rewards: ``[Q, G]`` rewards, NaN where not judged.
        normalize_std: divide by the group's standard deviation.
        eps: added to the standard deviation (>= 0).

    Returns:
        ``[Q, G]`` advantages; 0 where not judged and for groups without reward spread.

    >>> import torch
    >>> group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0], [2.0, float("nan"), 0.0, 1.0]]))
    tensor([[ 1.0000, -1.0000,  1.0000, -1.0000],
            [ 1.2247,  0.0000, -1.2247,  0.0000]])
    >>> group_advantages(torch.tensor([[3.0, 1.0], [5.0, 5.0]]), normalize_std=False)
    tensor([[ 1., -1.],
            [ 0.,  0.]])
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    judged, count, _, centred, spread = _group_stats(rewards)
    if normalize_std:
        std = (centred.square().sum(dim=1, keepdim=True) / count.clamp_min(1)).sqrt()  # [Q, 1]
        centred = centred / (std + eps)
    return torch.where(judged & spread, centred, 0.0)


@register_advantage_estimator("rloo")
def rloo_advantages(rewards: Tensor) -> Tensor:
    r"""REINFORCE leave-one-out advantages: each reward minus the mean of the others.

    .. math::
        A_{qg} = r_{qg} - \frac{1}{n_q - 1}\sum_{h \in J_q,\, h \ne g} r_{qh}
               = \frac{n_q}{n_q - 1}\,(r_{qg} - \mu_q)

    over the judged samples :math:`J_q` (:math:`n_q = |J_q|`). The baseline does not depend on
    the sample it is subtracted from, so the gradient estimate stays unbiased. Groups with
    fewer than 2 judged samples have no baseline and get advantage 0, as do NaN entries.

    Args:
        rewards: ``[Q, G]`` rewards, NaN where not judged.

    Returns:
        ``[Q, G]`` advantages.

    >>> import torch
    >>> rloo_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    tensor([[ 0.6667, -0.6667,  0.6667, -0.6667]])
    """
    judged, count, _, centred, spread = _group_stats(rewards)
    scale = count / (count - 1).clamp_min(1)  # [Q, 1]
    return torch.where(judged & spread, centred * scale, 0.0)
