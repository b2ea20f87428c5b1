"""One PPO update on a fixed rollout of 8 episodes, on however many processes launch it; the main
process writes the trained weights and the update's statistics to OUT. Used by
tests/test_distributed.py: 2 processes x 4 episodes must equal 1 process x 8.

    accelerate launch [--config_file F] tests/ppo_update_script.py MODEL_DIR OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from alignkit.config import PPOConfig, load_config
from alignkit.models import load_causal_lm
from alignkit.models.value import PolicyAndValue, disable_dropout, hidden_size
from alignkit.rl.experience import Experience
from alignkit.rl.rollout import Rollout
from alignkit.stages.ppo import ppo_update
from alignkit.training import engine
from alignkit.training.optim import build_optimizer
from alignkit.training.run import end_processes, make_accelerator, reduce_sum
from alignkit.training.seed import seed_everything

EPISODES, PROMPT, RESPONSE = 8, 5, 6


def fixed_rollout(vocab: int) -> tuple[Rollout, dict[str, torch.Tensor]]:
    """The same 8 episodes on every process: left-padded prompts, responses of 6 or 4 tokens, and
    old log-probs, values, advantages and returns drawn from a fixed generator."""
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(3, vocab, (EPISODES, PROMPT + RESPONSE), generator=g)
    response_mask = torch.ones(EPISODES, RESPONSE, dtype=torch.long)
    response_mask[::2, 4:] = 0
    att = torch.ones_like(seq)
    att[:3, :2] = 0
    att[:, PROMPT:] = response_mask
    roll = Rollout(seq, att, PROMPT, response_mask, response_mask[:, -1] == 0)
    exp = {"old_logp": -4.0 - torch.rand(EPISODES, RESPONSE, generator=g),
           "values": torch.randn(EPISODES, RESPONSE, generator=g),
           "advantages": torch.randn(EPISODES, RESPONSE, generator=g),
           "returns": torch.randn(EPISODES, RESPONSE, generator=g)}
    return roll, {k: v * response_mask for k, v in exp.items()}


def main(model_dir: str, out: str) -> None:
    accelerator = make_accelerator("no")
    world, rank = accelerator.num_processes, accelerator.process_index
    per = EPISODES // world
    cfg = load_config(PPOConfig, None, [f"model.path={model_dir}", "rollout.prompts_path=-", f"train.batch_size={per}",
                                        "ppo.epochs=1", "ppo.minibatches=1", "optim.lr=1e-3", "optim.max_grad_norm=1"])
    seed_everything(0)  # the value head starts alike everywhere
    policy = load_causal_lm(model_dir)
    actor = PolicyAndValue(policy, None, hidden_size(policy))
    disable_dropout(actor)
    optimizer = build_optimizer(actor, cfg.optim)
    actor, optimizer = engine.prepare(accelerator, actor, optimizer, batch_size=per, grad_accum=1,
                                      max_grad_norm=cfg.optim.max_grad_norm)
    roll, exp = fixed_rollout(policy.config.vocab_size)
    mine = slice(rank * per, (rank + 1) * per)  # this process's share of the rollout
    roll = Rollout(roll.sequences[mine], roll.attention_mask[mine], roll.prompt_width, roll.response_mask[mine],
                   roll.ended[mine])
    stats = ppo_update(cfg, accelerator, actor, optimizer, roll, Experience(**{k: v[mine] for k, v in exp.items()}), [], 0,
                       0)
    keys = ("policy_loss", "value_loss", "clip_fraction", "approx_kl")
    mean = [s / world for s in reduce_sum(accelerator, *[stats[k] for k in keys])]
    with engine.gathered_parameters(accelerator, actor):
        if accelerator.is_main_process:
            Path(out).mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().clone().contiguous() for k, v in accelerator.unwrap_model(actor).state_dict().items()}
            save_file(state, str(Path(out) / "weights.safetensors"))
            (Path(out) / "stats.json").write_text(json.dumps(dict(zip(keys, mean))))
    accelerator.wait_for_everyone()
    end_processes()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
