"""The PPO actor-critic: the policy and a critic that gives a value at every token.

The critic is either a copy of the reward model whose scalar head is applied at every position
(default; Ouyang et al. 2022 start the value function from the reward model), or a linear head on
the policy's own last hidden state (no second backbone). Both live in one module so DDP/FSDP wrap
the whole computation and one optimizer steps both (TRL and OpenRLHF do the same).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alignkit.models.generate import position_ids_from_mask


def disable_dropout(model: nn.Module) -> None:
    """PPO's ratio must start at exactly 1: the rollout's log-probs and the update's must come from
    the same function, so dropout (including LoRA's) is switched off."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        # Llama, Qwen2 and kin keep attention dropout as a float the attention call reads in
        # training mode (config.attention_dropout), not as a Dropout module.
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def response_slice(hidden_or_logits: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """Outputs at positions P-1 .. P+R-2: position t predicts token t+1, so these score the R
    response tokens (and the state before each)."""
    return hidden_or_logits[:, prompt_width - 1:-1]


class PolicyAndValue(nn.Module):
    """forward -> (logits (B, R, V) for the response tokens, values (B, R))."""

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None, hidden_size: int | None = None,
                 value_offset: float = 0.0):
        super().__init__()
        self.policy = policy
        self.critic = critic  # a sequence-classification model (its `score` head is used per token)
        # The reward model's offset, so a critic started from it predicts rewards on the scale PPO uses.
        self.value_offset = value_offset
        if critic is None:
            self.value_head = nn.Linear(hidden_size, 1)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)

    @property
    def config(self) -> Any:
        """The policy's config: engines read model sizes from it (DeepSpeed's "auto" buckets)."""
        return self.policy.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        position_ids = position_ids_from_mask(attention_mask)
        need_hidden = self.critic is None
        # logits_to_keep: the LM head runs on the R + 1 last positions only, not the prompt's.
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False, output_hidden_states=need_hidden,
                          logits_to_keep=input_ids.shape[1] - prompt_width + 1)
        logits = out.logits[:, :-1]
        if need_hidden:
            hidden = response_slice(out.hidden_states[-1], prompt_width)  # the head stays fp32 with bf16 weights
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        else:
            backbone = getattr(self.critic, self.critic.base_model_prefix)
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state
            values = self.critic.score(response_slice(hidden, prompt_width)).squeeze(-1) - self.value_offset
        return logits, values.float()


def critic_from_reward_model(reward_hf: nn.Module) -> nn.Module:
    """A trainable copy of a decoder reward model (a sequence-classification model with `score`)."""
    import copy

    if not hasattr(reward_hf, "score"):
        from alignkit.errors import ModelError

        raise ModelError(f"value_model=reward needs a decoder reward model with a `score` head; "
                         f"{type(reward_hf).__name__} has none: use value_model=policy_head")
    critic = copy.deepcopy(reward_hf)
    critic.requires_grad_(True)
    return critic


def hidden_size(model: Any) -> int:
    config = model.config
    return getattr(config, "hidden_size", None) or getattr(config, "n_embd")
