"""RL math: advantages (GAE for PPO; group and REINFORCE++ advantages for the critic-free methods),
KL-penalised rewards, KL controllers, masked whitening, ensemble rewards.
Pure torch functions, tested against hand-derived values and plain loops."""

from alignkit.rl.advantages import gae, masked_mean, masked_var, whiten
from alignkit.rl.group import group_advantages, informative_groups, reinforce_pp_advantages
from alignkit.rl.kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_penalized_rewards
from alignkit.rl.rewards import ensemble_scorer, uncertainty_penalized

__all__ = ["AdaptiveKLController", "FixedKLController", "gae", "group_advantages", "informative_groups",
           "reinforce_pp_advantages", "kl_estimate", "kl_penalized_rewards", "masked_mean",
           "masked_var", "ensemble_scorer", "uncertainty_penalized", "whiten"]
