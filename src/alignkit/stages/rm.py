"""Reward model: a scalar head on a backbone, trained so the preferred response scores higher (or,
with objective=cost, a cost model of harm: rm_cost.py).

setup   accelerator, run dir, tokenizer, preference data (rankings split whole, pairs tokenised),
        the backbone as a sequence-classification model + PEFT, optimizer, resume
loop    one optimizer step per global batch of pairs (or of whole rankings, each response forwarded
        once however many of the ranking's pairs it is in): chosen and rejected in one forward pass,
        -log sigmoid(r_c - r_r - margin) averaged over the global batch; held-out pairwise accuracy
        and margin at intervals
save    final evaluation (overall and per source), the reward offset that makes the policy's mean
        reward 0 on the RL prompts, and the model as a standard HF directory in output_dir/model
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from alignkit.config import RMConfig
from alignkit.data.cost import build_cost_data
from alignkit.data.reward import RewardPair, build_reward_data
from alignkit.data.templates import choose_chat_template
from alignkit.errors import ConfigError, DataError, ModelError
from alignkit.losses import pairwise_accuracy, pairwise_ranking_loss
from alignkit.models import apply_peft, count_parameters, load_tokenizer
from alignkit.models.loading import is_adapter_dir
from alignkit.models.reward import (RewardModel, batch_sequences, load_reward_backbone, packing_is_exact_for_rewards,
                                    score_conversations)
from alignkit.stages.rm_cost import cost_batch, evaluate_costs, summarize_costs
from alignkit.training import engine
from alignkit.models.saving import save_final_model
from alignkit.training.loop import close_run, start_training, train_steps
from alignkit.training.run import begin_stage, publish_data_report, reduce_sum, say

NORMALIZATION_FILE = "reward_normalization.json"


def collate_pairs(pairs: list[RewardPair], pad_id: int, pack_rows: int = 0, share: bool = False) -> dict[str, torch.Tensor]:
    """The sequences of a batch of pairs for one forward pass: right-padded together (input_ids,
    attention_mask) or packed into rows of pack_rows tokens (input_ids, position_ids, ends), with
    `chosen` and `rejected`, the positions of each pair's two sequences among the scores. Without
    `share`, the chosen sequences then the rejected ones; with it, each distinct sequence once (the
    pairs of one ranking share their responses)."""
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    if share:
        keys = [tuple(s) for s in seqs]
        position = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        where = [position[key] for key in keys]
        seqs = [list(key) for key in position]
    else:
        where = list(range(len(seqs)))
    out = {"margin": torch.tensor([p.margin if p.margin is not None else 0.0 for p in pairs]),
           "chosen": torch.tensor(where[:len(pairs)]), "rejected": torch.tensor(where[len(pairs):])}
    return {**batch_sequences(seqs, pad_id, pack_rows), **out}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in ("margin", "chosen", "rejected")}


def batch_units(pairs: list[RewardPair], by: str) -> list[list[int]]:
    """The elements batches are drawn from, as lists of pair indices: each pair alone, or (by ranking)
    the pairs of one ranking together, in order of first appearance."""
    if by == "pair":
        return [[i] for i in range(len(pairs))]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.group, []).append(i)
    return list(groups.values())


def run_rm(cfg: RMConfig) -> Path:
    """Train a reward model; return the saved model directory."""
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "rm")
    if model_dir is None:
        return run_dir / "model"

    if is_adapter_dir(cfg.model.path):
        raise ModelError(f"model.path '{cfg.model.path}' is a LoRA adapter; merge it first "
                         f"(alignkit merge {cfg.model.path} MERGED_DIR) and start the reward model from that")
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    choose_chat_template(tokenizer, cfg.data.chat_template)
    d, cost = cfg.data, cfg.objective == "cost"
    if cost:  # a cost model: examples of one or two labelled responses (rm_cost.py)
        train, held, report = build_cost_data(d.train_path, d.eval_path, d.eval_fraction, tokenizer, d.max_length, cfg.seed)
    else:
        train, held, report = build_reward_data(d.train_path, d.eval_path, d.eval_fraction, tokenizer, d.max_length,
                                                cfg.seed, d.adjacent_only, d.rating_margin, d.rating_aspect)
    publish_data_report(accelerator, report, run_dir)
    if not train:
        raise DataError(f"{d.train_path}: no {'labelled rows' if cost else 'preference pairs'} left after filtering "
                        "(see data_report.json)")
    sources = sorted({p.source for p in held})
    what = "examples" if cost else "pairs"

    hf = load_reward_backbone(cfg.model.path, cfg.model.dtype, cfg.model.trust_remote_code,
                              quantization=cfg.model.quantization)
    hf.config.pad_token_id = tokenizer.pad_token_id
    model = RewardModel(apply_peft(hf, cfg.peft, task="SEQ_CLS")).to(accelerator.device)
    with engine.gathered_parameters(accelerator, model):  # a forward pass: whole weights under ZeRO-3
        packing = cfg.data.packing != "off" and packing_is_exact_for_rewards(model, len(tokenizer))
    if cfg.data.packing == "on" and not packing:
        raise ConfigError("data.packing=on, but this backbone's scores change when sequences are packed "
                          "(an encoder, or a kernel that ignores restarting position ids); use auto or off")
    rows = cfg.data.max_length if packing else 0
    units = [[i] for i in range(len(train))] if cost else batch_units(train, cfg.batch_by)
    trainable, total = count_parameters(model)
    say(accelerator, f"{cfg.objective} model {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); "
                     f"{len(train)} training {what}" + (f" in {len(units)} rankings" if cfg.batch_by == "ranking" else "")
                     + f", {len(held)} held-out {what}; packing {'on' if packing else 'off'}")

    run = start_training(cfg, accelerator, model, run_dir, len(units), "rankings" if cfg.batch_by == "ranking" else what)
    model, pad_id, device, share = run.model, tokenizer.pad_token_id, accelerator.device, cfg.batch_by == "ranking"
    if cfg.keep_best and engine.partitioned(accelerator):
        raise ConfigError("keep_best copies the whole model at each better evaluation; under ZeRO-3 the weights are "
                          "partitioned: use ZeRO-1/2, or leave keep_best empty")
    if cfg.keep_best and not held:
        raise ConfigError("keep_best needs held-out pairs to choose by: set data.eval_path or data.eval_fraction > 0")
    best = Best(cfg.keep_best, run_dir, accelerator.is_main_process)

    # ---------------------------------------------------------------- loop
    def batches(indices: list[int], mine: list[list[int]]) -> tuple[list[list[int]], float]:
        # Every process knows the whole global batch, so each can count its pairs.
        return [[i for u in mb_units for i in units[u]] for mb_units in mine], sum(len(units[u]) for u in indices)

    def loss(mb: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        if cost:
            return cost_batch(model, [train[i] for i in mb], pad_id, rows, device)
        batch = {k: v.to(device) for k, v in collate_pairs([train[i] for i in mb], pad_id, rows, share).items()}
        scores = model(**model_inputs(batch))
        r_c, r_r = scores[batch["chosen"]], scores[batch["rejected"]]
        losses = pairwise_ranking_loss(r_c, r_r, batch["margin"], cfg.center_coef)  # margin 0 unless given
        return losses.sum(), {"loss": float(losses.detach().sum()), "pairs": float(len(mb)),
                              "acc": float(pairwise_accuracy(r_c.detach(), r_r.detach()).sum()),
                              "margin": float((r_c - r_r).detach().sum())}

    def summarize(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
        pairs = sums["pairs"]
        return {"loss": sums["loss"] / pairs, "accuracy": sums["acc"] / pairs, "margin": sums["margin"] / pairs,
                "pairs_per_s": pairs / seconds, "pairs": int(pairs)}

    judge = evaluate_costs if cost else evaluate_pairs
    groups = () if cost else (sources,)
    evaluate = (lambda: judge(model, held, *groups, cfg.train.eval_batch_size, pad_id, accelerator, rows)) if held else None
    result = train_steps(cfg, run, name="rm", batches=batches, loss=loss, summarize=summarize_costs if cost else summarize,
                         evaluate=evaluate, show=("loss", "accuracy", f"{what}_per_s"),
                         on_eval=lambda step, figures: best.consider(step, figures, accelerator.unwrap_model(model)))

    # ---------------------------------------------------------------- save
    if result and cost:
        say(accelerator, f"held-out accuracy {result['eval_accuracy']:.3f} (unsafe recall {result['eval_unsafe_recall']:.3f}"
                         f", safe recall {result['eval_safe_recall']:.3f})" + (f", pair accuracy {result['eval_pair_accuracy']:.3f}"
                                                                             if "eval_pair_accuracy" in result else ""))
    elif result:
        say(accelerator, f"held-out pairwise accuracy {result['eval_accuracy']:.3f}, mean margin {result['eval_margin']:.3f}")
    rm = accelerator.unwrap_model(model)
    if cfg.keep_best:  # early stopping: back to the weights of the best evaluation
        accelerator.wait_for_everyone()
        result = best.restore(rm)
        say(accelerator, f"kept the weights of step {result['step']} ({cfg.keep_best} {result[cfg.keep_best]:.3f})")
    # Every process computes the offset (the same prompts, greedy): under ZeRO-3 each forward pass of
    # the reward model is a collective that all must join.
    norm = {"offset": 0.0, "normalized_on": None, "objective": "cost"} if cost else reward_offset(cfg, rm, tokenizer)
    with engine.gathered_parameters(accelerator, model):
        if accelerator.is_main_process:
            hf_out = rm.hf.merge_and_unload() if hasattr(rm.hf, "merge_and_unload") else rm.hf
            save_final_model(hf_out, tokenizer, model_dir,
                             extra_files={NORMALIZATION_FILE: json.dumps({**norm, **result}, indent=2) + "\n"})
    return close_run(run, model_dir, "reward model")


class Best:
    """The best held-out evaluation so far by one figure: its weights, with its step and figures in the
    file's metadata, in run_dir/best.safetensors (written whole, then renamed; read back on resume,
    so early stopping survives an interruption)."""

    def __init__(self, key: str, run_dir: Path, main: bool):
        self.key, self.main, self.path = key, main, run_dir / "best.safetensors"
        self.value = self.figures()[key] if key and self.path.is_file() else -math.inf

    def figures(self) -> dict[str, float]:
        from safetensors import safe_open

        with safe_open(str(self.path), "pt") as fh:
            return json.loads(fh.metadata()["figures"])

    def consider(self, step: int, figures: dict[str, float], model: torch.nn.Module) -> None:
        if not self.key:
            return
        if self.key not in figures:
            raise ConfigError(f"keep_best={self.key}, but the held-out figures are {', '.join(sorted(figures))} (a "
                              "per-source figure needs a `source` field with that value in the data)")
        if figures[self.key] <= self.value:
            return
        self.value = figures[self.key]
        if self.main:
            from safetensors.torch import save_file

            tmp = self.path.with_suffix(".tmp")
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"figures": json.dumps({"step": step, **figures})})
            tmp.replace(self.path)

    def restore(self, model: torch.nn.Module) -> dict[str, float]:
        """Load the best weights into `model`; their step and figures."""
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(self.path)))
        return self.figures()


@torch.no_grad()
def evaluate_pairs(model: Any, pairs: list[RewardPair], sources: list[str], batch_size: int, pad_id: int,
                   accelerator: Any, pack_rows: int = 0) -> dict[str, float]:
    """Held-out pairwise accuracy and mean margin r_c - r_r, overall and per source, all processes."""
    model.eval()
    acc = {s: 0.0 for s in sources}
    n = {s: 0.0 for s in sources}
    margin = 0.0
    for chunk, real in engine.lockstep(pairs, accelerator.process_index, accelerator.num_processes, batch_size):
        batch = {k: v.to(accelerator.device) for k, v in collate_pairs(chunk, pad_id, pack_rows).items()}
        with accelerator.autocast():
            scores = model(**model_inputs(batch))
        if not real:
            continue
        r_c, r_r = scores[batch["chosen"]], scores[batch["rejected"]]
        for p, a in zip(chunk, pairwise_accuracy(r_c, r_r).tolist()):
            acc[p.source] += a
            n[p.source] += 1
        margin += float((r_c - r_r).sum())
    totals = reduce_sum(accelerator, margin, *[acc[s] for s in sources], *[n[s] for s in sources])
    margin, accs, counts = totals[0], totals[1:1 + len(sources)], totals[1 + len(sources):]
    model.train()
    total = sum(counts)
    out = {"eval_accuracy": sum(accs) / max(total, 1.0), "eval_margin": margin / max(total, 1.0)}
    if len(sources) > 1:
        out.update({f"eval_accuracy/{s}": a / c for s, a, c in zip(sources, accs, counts) if c})
    return out


def reward_offset(cfg: RMConfig, rm: RewardModel, tokenizer: Any) -> dict[str, Any]:
    """The mean reward of the policy's greedy responses on the normalisation prompts (0 if none):
    PPO subtracts it, so the SFT policy starts at a mean reward of 0."""
    if not cfg.normalize.prompts_path:
        return {"offset": 0.0, "normalized_on": None}
    from alignkit.data.records import read_records
    from alignkit.models import load_causal_lm
    from alignkit.models.generate import generate_responses

    rows = read_records(cfg.normalize.prompts_path)[: cfg.normalize.samples]
    prompts = []
    for r in rows:
        if not isinstance(r.row.get("prompt"), str):
            raise DataError(f"{r.where}: normalisation prompts need a string field 'prompt'")
        prompts.append([{"role": "user", "content": r.row["prompt"]}])
    policy_path = cfg.normalize.policy_path or cfg.model.path
    with engine.whole_models():  # the policy stays out of the engine: whole on every process
        policy = load_causal_lm(policy_path).to(next(rm.parameters()).device)
        responses = generate_responses(policy, load_tokenizer(policy_path), prompts, cfg.normalize.max_new_tokens,
                                       batch_size=64)
    scores = score_conversations(rm, tokenizer, prompts, responses, cfg.data.max_length)
    return {"offset": float(scores.mean()), "normalized_on": {"prompts": cfg.normalize.prompts_path,
                                                              "policy": str(policy_path), "n": len(prompts)}}
