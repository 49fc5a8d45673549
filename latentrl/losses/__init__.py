"""Losses: advantage estimators, the latent-policy PPO objective and contrastive estimators.

Components hold only their hyper-parameters, take tensors and return ``(loss, stats)`` with
``stats`` a dict of detached floats; pure functions cover the closed forms.

>>> import torch
>>> from latentrl.losses import PPOClipLoss, group_advantages
>>> advantages = group_advantages(torch.tensor([[1.0, 0.0]])).flatten()
>>> loss, stats = PPOClipLoss()(torch.zeros(2, requires_grad=True), torch.zeros(2), advantages)
>>> sorted(stats)[:3]
['approx_kl', 'clip_fraction', 'clip_fraction_high']
"""

from .advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    get_advantage_estimator,
    group_advantages,
    register_advantage_estimator,
    rloo_advantages,
)
from .contrastive import (
    CONTRASTIVE_ESTIMATORS,
    ContrastiveLoss,
    MVDHELLoss,
    MVInfoNCELoss,
    RewardContrastiveLoss,
    make_contrastive_loss,
    mv_dhel,
    mv_infonce,
    reward_contrastive,
    reward_positive_mask,
    select_views,
)
from .likelihood import answer_token_probability, likelihood_reward
from .policy import PPOClipLoss, gaussian_entropy, gaussian_kl, gaussian_log_prob, value_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "CONTRASTIVE_ESTIMATORS",
    "AdvantageEstimator",
    "ContrastiveLoss",
    "MVDHELLoss",
    "MVInfoNCELoss",
    "PPOClipLoss",
    "RewardContrastiveLoss",
    "answer_token_probability",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "get_advantage_estimator",
    "group_advantages",
    "likelihood_reward",
    "make_contrastive_loss",
    "mv_dhel",
    "mv_infonce",
    "register_advantage_estimator",
    "reward_contrastive",
    "reward_positive_mask",
    "rloo_advantages",
    "select_views",
    "value_loss",
]
