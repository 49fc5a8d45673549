"""A dense reward from the frozen main model: how likely it finds the gold answer.

DLR's outcome reward (is the greedy decode correct?) is tied inside most groups of a small
policy's samples, so most groups carry no advantage. The main model's probability of the
gold answer given a latent, teacher-forced in one forward pass, is almost never tied and
costs no generation (the idea of RLPR and VeriFree, here on latents).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["answer_token_probability", "likelihood_reward"]

IGNORE_INDEX = -100
"""Label of a position that is not scored (Hugging Face's convention)."""


def answer_token_probability(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Mean per-token probability of the labelled tokens, one number per sequence.

    .. math::
        s_b = \frac{1}{|T_b|} \sum_{t \in T_b} p(y_{b,t} \mid x_b, y_{b,<t})

    where :math:`T_b` are the positions of sequence b whose label is not ``-100``. Logits at
    position t predict the label at t + 1 (a causal LM's shift is done here). The mean of
    probabilities rather than of log-probabilities keeps it in [0, 1] and does not let one
    hopeless token dominate (RLPR's choice).

    Args:
        logits: ``[B, L, V]`` the model's logits.
        labels: ``[B, L]`` token ids to score, ``-100`` elsewhere.

    Returns:
        ``[B]`` scores in [0, 1].

    >>> logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [1.0, 1.0]]]))
    >>> answer_token_probability(logits, torch.tensor([[-100, 1, 0]]))  # (0.5 + 0.9) / 2
    tensor([0.7000])
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, L, V] and labels [B, L], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    targets = labels[:, 1:]  # [B, L-1]
    scored = targets != IGNORE_INDEX
    if not scored.any(dim=1).all():
        raise ValueError("every sequence needs at least one labelled token after the first")
    log_probs = logits[:, :-1].float().log_softmax(dim=-1)  # [B, L-1, V]
    picked = log_probs.gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)  # [B, L-1]
    probabilities = torch.where(scored, picked.exp(), 0.0)
    return probabilities.sum(dim=1) / scored.sum(dim=1)


def likelihood_reward(samples: Tensor, at_mean: Tensor) -> Tensor:
    r"""Each sample's score minus its question's score at the policy's mean latent.

    .. math::
        r_{qk} = s(z_{qk}) - s(\mu_q)

    The baseline removes how easy the question is, so the reward says how much the sampled
    latent helps beyond the policy's own best guess (VeriFree's debiasing).

    Args:
        samples: ``[Q, K]`` scores of the sampled latents.
        at_mean: ``[Q]`` scores at each question's mean latent.

    Returns:
        ``[Q, K]`` rewards.

    >>> likelihood_reward(torch.tensor([[0.5, 0.2]]), torch.tensor([0.3]))
    tensor([[ 0.2000, -0.1000]])
    """
    if samples.ndim != 2 or at_mean.shape != samples.shape[:1]:
        raise ValueError(
            f"samples must be [Q, K] and at_mean [Q], got {tuple(samples.shape)} and "
            f"{tuple(at_mean.shape)}"
        )
    return samples - at_mean[:, None]
