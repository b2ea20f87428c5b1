"""Distillation: an aligned teacher into a student, by sequences or by token distributions.

setup   accelerator, run dir, prompts (split into training and held-out), the teacher's responses to
        every prompt (written once to teacher_data.jsonl; reused on resume), the student + PEFT
loop    mode=sequence: the shared causal-LM loop on the teacher's responses (SFT loss; any tokenizers).
        mode=token: per step, responses (the teacher's, or the student's own samples when on_policy),
        one forward pass of each model over them, and the chosen divergence between the two
        next-token distributions at every response position (losses/distill.py), averaged per
        response and over the global batch; held-out divergence at intervals
save    final evaluation, the student as a standard HF directory in output_dir/model
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from alignkit.config import DataConfig, DistillConfig
from alignkit.data.collate import collate_responses
from alignkit.data.prompts import Conversation, read_prompts
from alignkit.data.reward import conversation_with_start
from alignkit.errors import ConfigError, DataError
from alignkit.losses.distill import token_forward_kl, token_generalized_jsd, token_reverse_kl
from alignkit.models import apply_peft, count_parameters, load_causal_lm, load_tokenizer
from alignkit.models.loading import load_policy
from alignkit.models.generate import generate_responses
from alignkit.models.value import disable_dropout
from alignkit.rl.rollout import sample_rollout
from alignkit.training import engine
from alignkit.training.batching import shard
from alignkit.training.lm_loop import train_and_save
from alignkit.training.loop import close_run, save_model, start_training, train_steps
from alignkit.training.run import begin_stage, reduce_sum, say, seed_per_process

TEACHER_FILE = "teacher_data.jsonl"


def run_distill(cfg: DistillConfig) -> Path:
    """Train the student; return the saved model directory."""
    # ---------------------------------------------------------------- setup
    accelerator, run_dir, model_dir = begin_stage(cfg, "distill")
    if model_dir is None:
        return run_dir / "model"
    prompts = read_prompts(cfg.prompts_path)
    order = list(range(len(prompts)))
    random.Random(cfg.seed).shuffle(order)
    n_held = round(cfg.eval_fraction * len(prompts)) if len(prompts) > 1 else 0
    held_idx, train_idx = sorted(order[:n_held]), sorted(order[n_held:])
    teacher = engine.load_frozen(accelerator, lambda: load_causal_lm(cfg.teacher))  # out of the engine, whole
    teacher_tokenizer = load_tokenizer(cfg.teacher)
    answers = teacher_responses(cfg, accelerator, teacher, teacher_tokenizer, prompts, run_dir)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    if cfg.mode == "token":
        check_same_tokenizer(teacher_tokenizer, tokenizer, cfg)
    student = apply_peft(load_policy(cfg.model).to(accelerator.device), cfg.peft)
    trainable, total = count_parameters(student)
    say(accelerator, f"student {total:,} parameters, {trainable:,} trainable ({cfg.peft.method}); teacher "
                     f"{sum(p.numel() for p in teacher.parameters()):,}; mode {cfg.mode}"
                     + (f", {cfg.divergence}{', on-policy' if cfg.on_policy else ''}" if cfg.mode == "token" else "")
                     + f"; {len(train_idx)} training prompts, {len(held_idx)} held out")

    if cfg.mode == "sequence":  # fine-tuning on the teacher's responses: the SFT loop as it is
        del teacher
        return sequence_distill(cfg, accelerator, student, tokenizer, run_dir)

    disable_dropout(student)  # the divergence compares two deterministic distributions
    train = [(prompts[i], answers[i]) for i in train_idx]
    held = [(prompts[i], answers[i]) for i in held_idx]
    run = start_training(cfg, accelerator, student, run_dir, len(train), "prompts")
    student, device = run.model, accelerator.device
    if run.start == 0:
        seed_per_process(accelerator, cfg.seed)  # on-policy samples differ across processes

    # ---------------------------------------------------------------- loop
    def batches(indices: list[int], mine: list[list[int]]) -> tuple[list, float]:
        # Sampling every micro-batch before any update draws the same samples as sampling each
        # before its own forward pass: the weights change only at the optimizer step, and the
        # forward passes draw no random numbers (dropout is off).
        parts = []
        for mb in mine:
            convs = [train[i][0] for i in mb]
            parts.append(student_samples(cfg, accelerator, student, tokenizer, convs) if cfg.on_policy else
                         text_sequences(tokenizer, convs, [train[i][1] for i in mb], cfg.max_length))
        return parts, run.global_size  # the mean over the global batch of responses

    def loss(part: tuple[list[list[int]], list[int]]) -> tuple[torch.Tensor, dict[str, float]]:
        per_response, tokens = divergences(cfg, student, teacher, tokenizer, *part, device)
        return per_response.sum(), {"loss": float(per_response.detach().sum()), "tokens": float(tokens.sum()),
                                    "responses": float(len(part[0]))}

    def summarize(sums: dict[str, float], seconds: float, done: int) -> dict[str, float]:
        n = sums["responses"]
        return {"loss": sums["loss"] / n, "response_tokens": sums["tokens"] / n, "responses_per_s": n / seconds,
                "epoch": done * run.global_size / len(train)}

    evaluate = (lambda: {"eval_loss": mean_divergence(cfg, accelerator, student, teacher, tokenizer, held)}) \
        if held else None
    result = train_steps(cfg, run, name="distill", batches=batches, loss=loss, summarize=summarize,
                         evaluate=evaluate, show=("loss", "responses_per_s"))

    # ---------------------------------------------------------------- save
    if result:
        say(accelerator, f"held-out {cfg.divergence} {result['eval_loss']:.4f} per response token")
    save_model(accelerator, student, tokenizer, model_dir, cfg.model.path)
    return close_run(run, model_dir, "distill")


def teacher_responses(cfg: DistillConfig, accelerator: Any, teacher: Any, tokenizer: Any,
                      prompts: list[Conversation], run_dir: Path) -> list[str]:
    """The teacher's response to every prompt, generated once (sharded over processes) and kept in
    run_dir/teacher_data.jsonl as SFT rows; a resumed run reads them back."""
    path = run_dir / TEACHER_FILE
    if cfg.resume and path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if len(rows) == len(prompts):
            return [r["messages"][-1]["content"] for r in rows]
    s = cfg.sampling
    greedy = cfg.teacher_decoding == "greedy"
    mine = shard(list(range(len(prompts))), accelerator.process_index, accelerator.num_processes)
    with engine.whole_models():  # the teacher is whole on every process: no generation in lockstep
        texts = generate_responses(teacher, tokenizer, [prompts[i] for i in mine], s.max_new_tokens,
                                   0.0 if greedy else s.temperature, s.top_p, batch_size=64)
    pairs = list(zip(mine, texts))
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
    answers = [text for _, text in sorted(pairs)]
    if accelerator.is_main_process:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"messages": [*p, {"role": "assistant", "content": a}]}) + "\n"
                               for p, a in zip(prompts, answers)))
        tmp.replace(path)
    accelerator.wait_for_everyone()
    return answers


def check_same_tokenizer(teacher_tokenizer: Any, student_tokenizer: Any, cfg: DistillConfig) -> None:
    """Token-level distillation compares distributions over one vocabulary: refuse two tokenizers."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(f"mode=token needs the teacher's tokenizer, but {cfg.teacher} and {cfg.model.path} have "
                          f"different vocabularies ({len(teacher_tokenizer)} and {len(student_tokenizer)} tokens); "
                          "use mode=sequence, which fine-tunes on the teacher's text and works across tokenizers")


def sequence_distill(cfg: DistillConfig, accelerator: Any, student: Any, tokenizer: Any, run_dir: Path) -> Path:
    """Sequence-level distillation: the causal-LM loop on the teacher's responses (response tokens only)."""
    from alignkit.data import build_sft_data, pack_examples, packing_is_exact

    data_cfg = DataConfig(train_path=str(run_dir / TEACHER_FILE), eval_fraction=cfg.eval_fraction,
                          max_length=cfg.max_length, dedupe=False)
    data = build_sft_data(data_cfg, tokenizer, cfg.seed)
    for line in data.report.lines():
        say(accelerator, f"data {line}")
    if not data.train:
        raise DataError(f"{run_dir / TEACHER_FILE}: no teacher responses left to train on")
    with engine.gathered_parameters(accelerator, student):  # a forward pass: whole weights under ZeRO-3
        packing = cfg.peft.method != "prefix" and packing_is_exact(student, len(tokenizer))[0]
    train_rows = pack_examples(data.train, cfg.max_length) if packing else data.train
    eval_rows = pack_examples(data.eval, cfg.max_length) if packing else data.eval
    return train_and_save(cfg, name="distill", accelerator=accelerator, model=student, tokenizer=tokenizer,
                          train_rows=train_rows, eval_rows=eval_rows, run_dir=run_dir, base_model_path=cfg.model.path)


@torch.no_grad()
def student_samples(cfg: DistillConfig, accelerator: Any, student: Any, tokenizer: Any, convs: list[Conversation]
                    ) -> tuple[list[list[int]], list[int]]:
    """On-policy responses: the student's own samples at this step, as the very tokens it sampled
    (prompt tokens, then the response up to and including EOS) and each response's start."""
    s = cfg.sampling
    roll = sample_rollout(accelerator.unwrap_model(student), tokenizer, convs, s.max_new_tokens, s.temperature,
                          s.top_p, s.top_k)
    seqs, starts = [], []
    for ids, att, resp, keep in zip(roll.sequences.cpu(), roll.attention_mask.cpu(), roll.responses.cpu(),
                                    roll.response_mask.cpu()):
        prompt = ids[: roll.prompt_width][att[: roll.prompt_width].bool()].tolist()
        seq, start = fit(prompt + resp[keep.bool()].tolist(), len(prompt), cfg.max_length)
        seqs.append(seq)
        starts.append(start)
    return seqs, starts


def text_sequences(tokenizer: Any, convs: list[Conversation], texts: list[str], max_length: int
                   ) -> tuple[list[list[int]], list[int]]:
    """Conversations with written responses (the teacher's) as token ids and response starts."""
    seqs, starts = [], []
    for conv, text in zip(convs, texts):
        ids, start, _ = conversation_with_start(tokenizer, tuple(conv), text, 10**9)
        seq, start = fit(ids, start, max_length)
        seqs.append(seq)
        starts.append(start)
    return seqs, starts


def fit(ids: list[int], start: int, max_length: int) -> tuple[list[int], int]:
    """At most max_length tokens: the prompt loses its start first (one prompt token is kept, so the
    first response token has a position predicting it), then the response loses its end."""
    over = len(ids) - max_length
    if over <= 0:
        return ids, start
    cut = min(over, max(start - 1, 0))
    ids, start = ids[cut:], start - cut
    return ids[:max_length], start


def token_divergence(cfg: DistillConfig, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(1, K) divergence at K positions: logits (1, K, V) of the student and the teacher."""
    if cfg.divergence == "forward_kl":
        return token_forward_kl(student_logits, teacher_logits, cfg.temperature)
    if cfg.divergence == "reverse_kl":
        return token_reverse_kl(student_logits, teacher_logits, cfg.temperature)
    return token_generalized_jsd(student_logits, teacher_logits, cfg.jsd_beta, cfg.temperature)


def divergences(cfg: DistillConfig, student: Any, teacher: Any, tokenizer: Any, seqs: list[list[int]],
                starts: list[int], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-response mean divergence (B,), response tokens (B,)) for one micro-batch: both models run
    over the same padded sequences; only response positions enter the divergence."""
    batch = collate_responses(seqs, starts, tokenizer.pad_token_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    sequence = batch.pop("sequence")
    batch.pop("labels")
    owner = sequence[:, 1:]
    keep = owner >= 0
    vocab = len(tokenizer)  # embedding matrices may be padded past the tokenizer: compare real tokens only
    s_logits = student(**batch, use_cache=False).logits[:, :-1][keep][None, :, :vocab]
    with torch.no_grad():
        t_logits = teacher(**batch, use_cache=False).logits[:, :-1][keep][None, :, :vocab]
    per_token = token_divergence(cfg, s_logits, t_logits.to(s_logits.dtype))[0]
    n = len(seqs)
    sums = per_token.new_zeros(n).index_add(0, owner[keep], per_token)
    counts = torch.zeros(n, device=device).index_add(0, owner[keep], torch.ones_like(per_token))
    return sums / counts.clamp(min=1), counts


@torch.no_grad()
def mean_divergence(cfg: DistillConfig, accelerator: Any, student: Any, teacher: Any, tokenizer: Any,
                    pairs: list[tuple[Conversation, str]]) -> float:
    """Mean per-response divergence on held-out prompts with the teacher's responses, all processes."""
    student.eval()
    total = count = 0.0
    for chunk, real in engine.lockstep(pairs, accelerator.process_index, accelerator.num_processes,
                                       cfg.train.eval_batch_size):
        seqs, starts = text_sequences(tokenizer, [c for c, _ in chunk], [t for _, t in chunk], cfg.max_length)
        with accelerator.autocast():
            per, _ = divergences(cfg, student, teacher, tokenizer, seqs, starts, accelerator.device)
        total += float(per.sum()) * real
        count += len(chunk) * real
    total, count = reduce_sum(accelerator, total, count)
    student.train()
    return total / max(count, 1.0)
