"""The GRPO stage with its sampling replaced by a fixed one: each prompt's n responses are drawn from a
generator seeded by the prompt's text, so they do not depend on which process samples them or with
what else. Everything after sampling (rewards, advantages per group, old and reference log-probs,
minibatches, the loss normalised over all processes, the optimizer steps) is the stage's own. Used
by tests/test_distributed.py: 2 processes x 4 prompts must train as 1 process x 8.

    accelerate launch [--config_file F] tests/grpo_fixed_samples_script.py MODEL_DIR PROMPTS OUT BATCH_SIZE
"""

from __future__ import annotations

import sys
import zlib

import torch

import alignkit.stages.grpo as stage
from alignkit.config import GRPOConfig, load_config
from alignkit.models.generate import encode_prompts
from alignkit.rl.rollout import Rollout, decode_responses, response_mask_from
from alignkit.training.run import end_processes

WIDTH = 6


def fixed_groups(cfg, policy, tokenizer, autocast, score, prompts, rows, share=False):
    n = cfg.group.n
    convs = [p for p in prompts for _ in range(n)]
    enc = encode_prompts(tokenizer, convs)
    responses = []
    for conv in prompts:
        g = torch.Generator().manual_seed(zlib.crc32(conv[-1]["content"].encode()))
        # Ids 3.. are words; an EOS (the tokenizer's) lands in some responses, so lengths differ.
        ids = torch.randint(3, len(tokenizer), (n, WIDTH), generator=g)
        ends = torch.randint(2, WIDTH + 3, (n,), generator=g)
        for k in range(n):
            if ends[k] < WIDTH:
                ids[k, ends[k]] = tokenizer.eos_token_id
        responses.append(ids)
    responses = torch.cat(responses)
    mask, ended = response_mask_from(responses, tokenizer.eos_token_id)
    roll = Rollout(torch.cat([enc["input_ids"], responses], 1), torch.cat([enc["attention_mask"], mask], 1),
                   enc["input_ids"].shape[1], mask, ended)
    total, parts = score(convs, decode_responses(tokenizer, roll), [r for r in rows for _ in range(n)])
    return stage.Sampled(roll, total.view(-1, n), parts)


def length_reward(prompts, responses, rows):
    """Longer responses score higher: every group has a spread."""
    return [float(len(r)) / 10 for r in responses]


def flat_or_length(prompts, responses, rows):
    """0.5 for every response to a row marked 'flat' (a group without signal), else the length."""
    return [0.5 if row.get("flat") else float(len(r)) / 10 for r, row in zip(responses, rows)]


def main(model_dir: str, prompts: str, out: str, batch_size: str) -> None:
    stage.sample_groups = fixed_groups
    cfg = load_config(GRPOConfig, None, [
        f"model.path={model_dir}", f"rollout.prompts_path={prompts}", f"output_dir={out}", "log.progress=false",
        f"train.batch_size={batch_size}", "group.n=4", "group.epochs=2", "train.max_steps=6",
        "train.grad_accum=2", "kl.coef=0.1", "optim.lr=1e-3", "group.clip_low=0.05", "group.clip_high=0.05",
        "rewards=[{fn: grpo_fixed_samples_script:length_reward}]", "rollout.max_new_tokens=6"])
    stage.run_grpo(cfg)
    end_processes()


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    main(*sys.argv[1:])
