"""Policy-gradient pieces for a diagonal-Gaussian latent policy (DLR, DESIGN items 4 and 6).

The assistant's latent head outputs a mean and a log-std for each of N latent vectors of
width D, so ``log pi(z | q)`` is exact and KL/entropy have closed forms. Densities are summed
over every non-batch dimension: one latent trajectory ``z [N, D]`` is one action. With more
than one batch dimension (``[Q, K, N, D]``), ``event_dims=2`` sums only ``N, D`` and returns
``[Q, K]``, like ``torch.distributions.Independent(Normal(...), 2)``.

Components hold only hyper-parameters, take tensors and return ``(loss, stats)`` where
``stats`` is a dict of detached Python floats for logging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PPOClipLoss",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "value_loss",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_events(x: Tensor, event_dims: int | None) -> Tensor:
    """Sum the event dimensions: all but the first (``None``) or the last ``event_dims``."""
    if x.ndim == 0:
        raise ValueError("expected a tensor with a batch dimension, got a scalar")
    if event_dims is None:
        event_dims = x.ndim - 1
    if isinstance(event_dims, bool) or not 0 <= event_dims < x.ndim:
        raise ValueError(
            f"event_dims must be in [0, {x.ndim - 1}] for a {x.ndim}-d tensor "
            f"(at least one batch dimension), got {event_dims!r}"
        )
    return x.sum(dim=tuple(range(x.ndim - event_dims, x.ndim))) if event_dims else x


def gaussian_log_prob(
    z: Tensor, mean: Tensor, log_std: Tensor, *, event_dims: int | None = None
) -> Tensor:
    r"""Exact log-density of ``z`` under a diagonal Gaussian, summed over non-batch dims.

    .. math::
        \log \pi(z) = \sum_{n,d} \Big[ -\tfrac12 \Big(\frac{z_{nd} - \mu_{nd}}{\sigma_{nd}}\Big)^2
                      - \log\sigma_{nd} - \tfrac12 \log 2\pi \Big], \quad \sigma = e^{\log\sigma}

    Args:
        z: ``[B, N, D]`` samples (any ``[B, ...]``).
        mean: ``[B, N, D]`` means (broadcastable to ``z``).
        log_std: ``[B, N, D]`` log standard deviations (broadcastable to ``z``).
        event_dims: how many trailing dims to sum (None: all but the first).

    Returns:
        ``[B]`` log-densities (the leading, un-summed dims in general).

    >>> import torch
    >>> gaussian_log_prob(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    tensor([-5.5136])
    """
    # Multiplying by exp(-log_std) instead of dividing by exp(log_std) keeps one exp and
    # avoids dividing by an underflowed std.
    scaled = (z - mean) * torch.exp(-log_std)  # [B, N, D]
    return _sum_events(-0.5 * scaled.square() - log_std - 0.5 * _LOG_2PI, event_dims)


def gaussian_kl(
    mean_p: Tensor,
    log_std_p: Tensor,
    mean_q: Tensor,
    log_std_q: Tensor,
    *,
    event_dims: int | None = None,
) -> Tensor:
    r"""Closed-form ``KL(p || q)`` of two diagonal Gaussians, summed over non-batch dims.

    .. math::
        \mathrm{KL}(p \,\|\, q) = \sum_{n,d} \Big[ \log\frac{\sigma_q}{\sigma_p}
            + \frac{\sigma_p^2 + (\mu_p - \mu_q)^2}{2\sigma_q^2} - \frac12 \Big]

    For DLR's KL to the initial policy, ``p`` is the current policy and ``q`` the reference.

    Args:
        mean_p, log_std_p: ``[B, N, D]`` parameters of p.
        mean_q, log_std_q: ``[B, N, D]`` parameters of q (broadcastable).
        event_dims: how many trailing dims to sum (None: all but the first).

    Returns:
        ``[B]`` divergences (>= 0).

    >>> import torch
    >>> zero = torch.zeros(1, 2)
    >>> gaussian_kl(zero, zero, zero + 1.0, zero)  # unit variances, means 1 apart in 2 dims
    tensor([1.])
    """
    # Everything as differences of log-stds: no std**2 that could overflow or underflow alone.
    log_ratio = log_std_p - log_std_q  # [B, N, D]
    mean_term = (mean_p - mean_q) * torch.exp(-log_std_q)  # [B, N, D]
    kl = -log_ratio + 0.5 * (torch.exp(2.0 * log_ratio) + mean_term.square()) - 0.5
    return _sum_events(kl, event_dims)


def gaussian_entropy(log_std: Tensor, *, event_dims: int | None = None) -> Tensor:
    r"""Differential entropy of a diagonal Gaussian, summed over non-batch dims.

    .. math::
        H = \sum_{n,d} \Big[ \tfrac12 + \tfrac12\log 2\pi + \log\sigma_{nd} \Big]

    Args:
        log_std: ``[B, N, D]`` log standard deviations.
        event_dims: how many trailing dims to sum (None: all but the first).

    Returns:
        ``[B]`` entropies (nats).

    >>> import torch
    >>> gaussian_entropy(torch.zeros(2, 1))
    tensor([1.4189, 1.4189])
    """
    return _sum_events(log_std + 0.5 * (1.0 + _LOG_2PI), event_dims)


def _as_float(x: Tensor) -> Tensor:
    """Promote to at least float32: log-probs summed over N*D dims lose too much in bf16."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass(frozen=True)
class PPOClipLoss:
    r"""PPO clipped surrogate on sequence-level (whole-latent) log-probs, with optional KL and
    entropy terms.

    .. math::
        \rho_b = \exp(\mathrm{clamp}(\log\pi_\theta(z_b) - \log\pi_{old}(z_b), -M, M))

        L = -\frac1B \sum_b \min\big(\rho_b A_b,\ \mathrm{clip}(\rho_b, 1-\epsilon, 1+\epsilon) A_b\big)
            + \beta_{KL} \frac1B \sum_b \mathrm{KL}_b - \beta_H \frac1B \sum_b H_b

    **Why the log-ratio is clamped** (to ``[-M, M]``, ``M = max_log_ratio``, default 20,
    ``e^20 ~ 4.9e8``): a latent log-prob is a sum over N*D dimensions, so a small per-dimension
    change moves the log-ratio by tens or hundreds of nats and ``exp`` overflows to inf (then
    ``inf * 0`` gives NaN). The clamp only touches samples far outside the trust region, where
    the objective is already flat: for ``A > 0`` and a huge ratio the clipped branch is active
    (no gradient either way); for a tiny ratio ``rho * A`` is ~0. The one place it changes
    anything is ``A < 0`` with a huge ratio, where unclamped PPO would apply a gradient of
    ``~rho * |A|`` (> 5e8): with the clamp that sample contributes a constant (no gradient).
    ``M`` must exceed ``log(1 + clip_eps)`` and ``-log(1 - clip_eps)`` so the clip region
    itself is never clamped.

    ``logp_old`` and ``advantages`` are detached here: they are constants of the objective.
    Inputs in half precision are promoted to float32.

    Stats (detached floats):

    - ``loss``: the total loss;
    - ``policy_loss``: the clipped-surrogate term alone;
    - ``clip_fraction``: fraction of samples whose clipped branch is the active one in the
      ``min`` (so they get no gradient): ``A > 0`` and ``rho > 1 + eps``, or ``A < 0`` and
      ``rho < 1 - eps``. A ratio outside the range in the other direction (e.g. ``A > 0``,
      ``rho < 1 - eps``) is not clipped: the unclipped branch is smaller and keeps its gradient.
      ``clip_fraction_high`` and ``clip_fraction_low`` split it by side (TRL's definition);
    - ``ratio_mean``: mean of the (clamped) ratio;
    - ``approx_kl``: ``mean((rho - 1) - log rho)``, the non-negative "k3" estimate of
      ``KL(pi_old || pi_theta)`` from the samples;
    - ``kl`` and ``entropy``: batch means of the given tensors, present only when passed.

    >>> import torch
    >>> loss_fn = PPOClipLoss(clip_eps=0.2)
    >>> logp_new = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7]))
    >>> loss, stats = loss_fn(logp_new, torch.zeros(4), torch.tensor([1.0, -1.0, 2.0, 1.0]))
    >>> round(loss.item(), 4), stats["clip_fraction"]
    (-0.825, 0.5)
    >>> PPOClipLoss(clip_eps=-0.1)
    Traceback (most recent call last):
    ...
    ValueError: PPOClipLoss.clip_eps must be in (0, 1), got -0.1
    """

    clip_eps: float = 0.2
    """Half-width of the trust region for the ratio, in (0, 1)."""
    kl_coef: float = 0.0
    """Weight of the mean KL term (>= 0; 0 disables it and ``kl`` may be omitted)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (>= 0; 0 disables it and ``entropy`` may be omitted)."""
    max_log_ratio: float = 20.0
    """Bound M on ``|log rho|`` before ``exp`` (see the class docstring)."""

    def __post_init__(self) -> None:
        for name in ("clip_eps", "kl_coef", "entropy_coef", "max_log_ratio"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"PPOClipLoss.{name} must be a finite number, got {value!r}")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"PPOClipLoss.clip_eps must be in (0, 1), got {self.clip_eps!r}")
        for name in ("kl_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"PPOClipLoss.{name} must be >= 0, got {getattr(self, name)!r}")
        needed = max(math.log1p(self.clip_eps), -math.log1p(-self.clip_eps))
        if not self.max_log_ratio > needed:
            raise ValueError(
                f"PPOClipLoss.max_log_ratio must be > {needed:.4f} (outside the clip region "
                f"of clip_eps={self.clip_eps}), got {self.max_log_ratio!r}"
            )

    def __call__(
        self,
        logp_new: Tensor,
        logp_old: Tensor,
        advantages: Tensor,
        kl: Tensor | None = None,
        entropy: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss and stats.

        Args:
            logp_new: ``[B]`` log-probs of the samples under the current policy (with grad).
            logp_old: ``[B]`` log-probs under the behaviour policy that drew them.
            advantages: ``[B]`` advantages.
            kl: ``[B]`` per-sample KL to the reference policy (needed when ``kl_coef > 0``).
            entropy: ``[B]`` per-sample policy entropy (needed when ``entropy_coef > 0``).

        Returns:
            ``(loss, stats)``: a scalar loss and a dict of floats.
        """
        tensors = {"logp_new": logp_new, "logp_old": logp_old, "advantages": advantages}
        if kl is not None:
            tensors["kl"] = kl
        if entropy is not None:
            tensors["entropy"] = entropy
        for name, tensor in tensors.items():
            if tensor.ndim != 1 or tensor.shape != logp_new.shape:
                raise ValueError(
                    f"PPOClipLoss: {name} must have shape [B] like logp_new "
                    f"{tuple(logp_new.shape)}, got {tuple(tensor.shape)}"
                )
        if logp_new.numel() == 0:
            raise ValueError("PPOClipLoss: empty batch (B = 0)")
        if self.kl_coef > 0 and kl is None:
            raise ValueError("PPOClipLoss: kl_coef > 0 but no kl tensor was passed")
        if self.entropy_coef > 0 and entropy is None:
            raise ValueError("PPOClipLoss: entropy_coef > 0 but no entropy tensor was passed")

        logp_new = _as_float(logp_new)
        advantages = _as_float(advantages.detach())
        # Difference first, then clamp, then exp: exp of a log-prob (a sum over N*D dims)
        # alone would overflow long before the ratio does.
        log_ratio = (logp_new - _as_float(logp_old.detach())).clamp(
            -self.max_log_ratio, self.max_log_ratio
        )  # [B]
        ratio = torch.exp(log_ratio)  # [B]
        low, high = 1.0 - self.clip_eps, 1.0 + self.clip_eps
        unclipped = ratio * advantages  # [B]
        clipped = ratio.clamp(low, high) * advantages  # [B]
        policy_loss = -torch.minimum(unclipped, clipped).mean()

        loss = policy_loss
        if kl is not None and self.kl_coef > 0:
            loss = loss + self.kl_coef * _as_float(kl).mean()
        if entropy is not None and self.entropy_coef > 0:
            loss = loss - self.entropy_coef * _as_float(entropy).mean()

        with torch.no_grad():
            clipped_high = (advantages > 0) & (ratio > high)  # [B]
            clipped_low = (advantages < 0) & (ratio < low)  # [B]
            values = {
                "loss": loss,
                "policy_loss": policy_loss,
                "clip_fraction": (clipped_high | clipped_low).float().mean(),
                "clip_fraction_high": clipped_high.float().mean(),
                "clip_fraction_low": clipped_low.float().mean(),
                "ratio_mean": ratio.mean(),
                "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            }
            if kl is not None:
                values["kl"] = kl.float().mean()
            if entropy is not None:
                values["entropy"] = entropy.float().mean()
            # One device sync for all stats instead of one .item() each.
            floats = torch.stack([v.detach().float() for v in values.values()]).tolist()
        return loss, dict(zip(values, floats, strict=True))


def value_loss(pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    r"""Mean squared error of the value head's reward predictions.

    .. math::
        L = \frac{1}{|J|} \sum_{b \in J} (\hat v_b - r_b)^2

    over the samples :math:`J` whose target is not NaN (a NaN reward means "not judged": it
    has nothing to regress to). ``target`` is detached. With no judged sample the loss is 0,
    still connected to ``pred``'s graph so ``backward()`` works.

    Stats: ``value_mse`` and ``value_mae`` (mean absolute error) over the judged samples.

    >>> import torch
    >>> loss, stats = value_loss(torch.tensor([0.5, 1.0, 0.0]), torch.tensor([1.0, 1.0, float("nan")]))
    >>> loss
    tensor(0.1250)
    >>> stats
    {'value_mse': 0.125, 'value_mae': 0.25}
    """
    if pred.ndim != 1 or pred.shape != target.shape:
        raise ValueError(
            f"value_loss: pred and target must both have shape [B], "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    judged = ~torch.isnan(target)  # [B]
    error = pred[judged] - target.detach()[judged].to(pred.dtype)  # [J]
    count = judged.sum().clamp_min(1)
    loss = error.square().sum() / count
    with torch.no_grad():
        mae = error.abs().sum() / count
        mse, mae = torch.stack([loss.detach().float(), mae.float()]).tolist()
    return loss, {"value_mse": mse, "value_mae": mae}
