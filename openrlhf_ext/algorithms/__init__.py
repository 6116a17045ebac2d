"""Advantage grid, token returns, KL estimators and policy losses (pure tensor functions).

Nothing here touches Ray or OpenRLHF objects; the trainer wires these functions into OpenRLHF's
experience maker and actor. See ``docs/algorithms.md``.
"""

from openrlhf_ext.algorithms.advantages import AdvantageResult, compute_advantage_result, compute_sample_advantages
from openrlhf_ext.algorithms.config import (
    LOSS_AGG_MODES,
    POLICY_LOSS_TYPES,
    PRESETS,
    STOCK_ESTIMATORS,
    AdvantageConfig,
    ExtConfig,
    Preset,
    get_preset,
)
from openrlhf_ext.algorithms.kl import KL_ESTIMATORS, kl_estimate
from openrlhf_ext.algorithms.policy_loss import PolicyLossOutput, aggregate_loss, policy_loss
from openrlhf_ext.algorithms.returns import (
    TokenAdvantageResult,
    broadcast_to_tokens,
    compose_token_advantages,
    compute_token_advantages,
    discounted_returns,
    plan_groups,
    token_returns,
    token_rewards,
    whiten_token_advantages,
)

__all__ = [
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "POLICY_LOSS_TYPES",
    "PRESETS",
    "STOCK_ESTIMATORS",
    "AdvantageConfig",
    "AdvantageResult",
    "ExtConfig",
    "PolicyLossOutput",
    "Preset",
    "TokenAdvantageResult",
    "aggregate_loss",
    "broadcast_to_tokens",
    "compose_token_advantages",
    "compute_advantage_result",
    "compute_sample_advantages",
    "compute_token_advantages",
    "discounted_returns",
    "get_preset",
    "kl_estimate",
    "plan_groups",
    "policy_loss",
    "token_returns",
    "token_rewards",
    "whiten_token_advantages",
]
