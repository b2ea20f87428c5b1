"""Pairwise judging with both orders asked, so a judge's taste for a position cancels out.

A judge is any function (prompt, first, second) -> True when it prefers the response shown first.
Each pair is asked twice, A then B and B then A: a response wins only when it is preferred in both
orders; a judge that always picks the first (or always the second) position yields ties, never a
spurious win (Zheng et al. 2023, "Judging LLM-as-a-judge", position bias and the swap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Judge = Callable[[Any, str, str], bool]


def judge_pair(judge: Judge, prompt: Any, a: str, b: str) -> str:
    """'a', 'b' or 'tie' for one prompt."""
    return outcome(judge(prompt, a, b), judge(prompt, b, a))


def outcome(a_first_preferred: bool, b_first_preferred: bool) -> str:
    """One prompt's result from the two orders: a response wins only when preferred in both."""
    if a_first_preferred and not b_first_preferred:
        return "a"
    if b_first_preferred and not a_first_preferred:
        return "b"
    return "tie"


@torch.no_grad()
def lm_answers(model: Any, tokenizer: Any, questions: Sequence[str], yes: str, no: str,
               batch_size: int = 16) -> list[bool]:
    """For each question (a user turn), True where the model's next token `yes` is more likely than
    `no`: one forward pass per batch, no sampling."""
    from alignkit.models.generate import encode_prompts, position_ids_from_mask

    yes_id, no_id = (tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in (yes, no))
    convs = [[{"role": "user", "content": q}] for q in questions]
    device = next(model.parameters()).device
    out: list[bool] = []
    for i in range(0, len(convs), batch_size):
        enc = encode_prompts(tokenizer, convs[i:i + batch_size]).to(device)  # left-padded: the last column is next
        logits = model(**enc, position_ids=position_ids_from_mask(enc["attention_mask"]), use_cache=False).logits[:, -1]
        out += (logits[:, yes_id] > logits[:, no_id]).tolist()
    return out


def lm_prefers_first(model: Any, tokenizer: Any, template: str, prompts: Sequence[str], firsts: Sequence[str],
                     seconds: Sequence[str], batch_size: int = 16) -> list[bool]:
    """A local causal LM as judge: for each (prompt, first, second) it reads `template` (A = first,
    B = second) as a user turn; True where its next token "A" is more likely than "B"."""
    questions = [template.format(prompt=p, a=f, b=s) for p, f, s in zip(prompts, firsts, seconds)]
    return lm_answers(model, tokenizer, questions, "A", "B", batch_size)


def win_rate_summary(outcomes: Sequence[str]) -> dict[str, Any]:
    """Wins, losses and ties of A; the win rate over decided prompts with its 95% Wilson interval, and
    the tie rate beside it."""
    from alignkit.eval.metrics import wilson_interval

    wins, losses = outcomes.count("a"), outcomes.count("b")
    ties, decided = len(outcomes) - wins - losses, wins + losses
    return {"wins": wins, "losses": losses, "ties": ties, "n": len(outcomes),
            "win_rate": wins / decided if decided else float("nan"), "win_rate_ci95": wilson_interval(wins, decided),
            "tie_rate": ties / len(outcomes) if outcomes else float("nan")}


def reward_model_judge(score: Callable[[list, list[str]], Sequence[float]]) -> Judge:
    """A judge from a scorer of (prompts, responses): prefers the first when it scores strictly higher
    (a reward model has no position, so both orders agree; equal scores are a tie)."""
    def judge(prompt: Any, first: str, second: str) -> bool:
        s = score([prompt, prompt], [first, second])
        return float(s[0]) > float(s[1])
    return judge
