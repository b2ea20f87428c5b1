"""Losses: pure functions of tensors, torch only. Tensors in, per-example loss out."""

from alignkit.losses.cost import cost_accuracy, cost_ranking_loss, cost_sign_loss
from alignkit.losses.distill import forward_kl, generalized_jsd, reverse_kl
from alignkit.losses.dpo import PREFERENCE_LOSSES, preference_loss, sequence_logprobs
from alignkit.losses.grpo import aggregate, clipped_surrogate
from alignkit.losses.ppo import entropy_from_logits, entropy_from_logprobs, ppo_policy_loss, ppo_value_loss
from alignkit.losses.ranking import pairwise_accuracy, pairwise_ranking_loss
from alignkit.losses.sft import masked_mean_nll, sequence_nll, token_nll

__all__ = ["PREFERENCE_LOSSES", "aggregate", "cost_accuracy", "cost_ranking_loss", "cost_sign_loss", "clipped_surrogate", "forward_kl", "generalized_jsd", "preference_loss", "reverse_kl", "sequence_logprobs", "entropy_from_logits", "entropy_from_logprobs", "ppo_policy_loss", "ppo_value_loss", "masked_mean_nll", "pairwise_accuracy", "pairwise_ranking_loss", "sequence_nll", "token_nll"]
