"""PPO math against hand-derived values and plain loops: GAE, KL-penalised rewards, clipped policy
and value losses, masked whitening, the adaptive KL controller."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses import entropy_from_logits, ppo_policy_loss, ppo_value_loss
from alignkit.rl import AdaptiveKLController, gae, kl_estimate, kl_penalized_rewards, whiten


def test_gae_closed_form_four_step_episode():
    """r = (0, 0, 0, 1), V = (0.5, 0.4, 0.3, 0.2), gamma 1, lambda 0.95:
    deltas (-0.1, -0.1, -0.1, 0.8); A3 = 0.8, A2 = -0.1 + 0.95 * 0.8 = 0.66,
    A1 = -0.1 + 0.95 * 0.66 = 0.527, A0 = -0.1 + 0.95 * 0.527 = 0.40065; returns = A + V."""
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=0.95)
    assert torch.allclose(adv, torch.tensor([[0.40065, 0.527, 0.66, 0.8]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.90065, 0.927, 0.96, 1.0]]), atol=1e-6)
    # lambda 1: A_t = (sum of rewards from t) - V_t, so every return is the episode's reward, 1
    adv1, ret1 = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    assert torch.allclose(ret1, torch.ones(1, 4)) and torch.allclose(adv1, 1 - values)


def test_gae_ignores_padding_after_the_response():
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert torch.allclose(adv, torch.tensor([[0.40065, 0.527, 0.66, 0.8, 0.0]]), atol=1e-6)
    assert ret[0, 4] == 0


def test_gae_matches_a_plain_loop_on_random_data():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 9, generator=gen), torch.randn(5, 9, generator=gen)
    lengths = [9, 4, 1, 7, 6]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    gamma, lam = 0.99, 0.9
    adv, _ = gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        for t in range(n):
            expected = 0.0
            for k in range(t, n):
                next_v = values[b, k + 1].item() if k + 1 < n else 0.0
                delta = rewards[b, k].item() + gamma * next_v - values[b, k].item()
                expected += (gamma * lam) ** (k - t) * delta
            assert adv[b, t].item() == pytest.approx(expected, abs=1e-5)


def test_kl_penalized_rewards_put_the_score_on_the_last_real_token_only():
    """logp - ref = (0.5, 0, -1) on 3 real tokens, coefficient 0.1, score 2:
    rewards = (-0.05, 0, 0.1 + 2) and 0 on the padding."""
    logp = torch.tensor([[-1.0, -2.0, -3.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    rewards, kl = kl_penalized_rewards(torch.tensor([2.0]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 2.1, 0.0]]))
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -1.0, 0.0]]))


def test_kl_penalized_rewards_with_the_k3_estimator():
    """The same tokens with k3: log r = ref - logp = (-0.5, 0, 1), k3 = (r - 1) - log r =
    (e^-0.5 - 0.5, 0, e - 2) = (0.106531, 0, 0.718282); coefficient 0.1, score 2 on the last real
    token: rewards (-0.0106531, 0, 2 - 0.0718282) and 0 on the padding. k3 is never negative where
    k1 was (-1 on the third token)."""
    logp = torch.tensor([[-1.0, -2.0, -3.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0, 0.0]])
    rewards, kl = kl_penalized_rewards(torch.tensor([2.0]), logp, ref, torch.tensor([[1, 1, 1, 0]]), kl_coef=0.1,
                                       kind="k3")
    assert torch.allclose(kl, torch.tensor([[0.106531, 0.0, 0.718282, 0.0]]), atol=1e-6)
    assert torch.allclose(rewards, torch.tensor([[-0.0106531, 0.0, 1.9281718, 0.0]]), atol=1e-6)


def test_k3_estimator_values():
    """k3 = (r - 1) - log r, r = exp(ref - logp): log r = -0.5 -> e^-0.5 - 0.5 = 0.106531; log r = 1 -> e - 2."""
    k3 = kl_estimate(torch.tensor([0.0, 0.0, -1.0]), torch.tensor([-0.5, 0.0, 0.0]), "k3")
    assert torch.allclose(k3, torch.tensor([math.exp(-0.5) - 0.5, 0.0, math.e - 2.0]), atol=1e-6)


def test_policy_loss_at_inside_and_beyond_the_clip_range():
    """A = 1, clip 0.2: ratio 1 -> -1; ratio 1.1 (inside) -> -1.1; ratio 1.5 (beyond) -> -1.2, the
    clipped term; mean -1.1 and one token in three clipped. A = -1, ratio 0.5 -> max(0.5, 0.8) = 0.8."""
    logp = torch.log(torch.tensor([[1.0, 1.1, 1.5]]))
    loss, stats = ppo_policy_loss(logp, torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3), clip=0.2)
    assert loss.item() == pytest.approx(-1.1, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(1 / 3)
    neg, _ = ppo_policy_loss(torch.log(torch.tensor([[0.5]])), torch.zeros(1, 1), -torch.ones(1, 1), torch.ones(1, 1))
    assert neg.item() == pytest.approx(0.8)


def test_policy_loss_gradient_vanishes_when_clipped():
    logp = torch.log(torch.tensor([[1.5]])).requires_grad_(True)
    loss, _ = ppo_policy_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip=0.2)
    loss.sum().backward()
    assert logp.grad.item() == 0.0  # beyond 1 + clip with a positive advantage: no push further


def test_value_loss_clipping():
    """V_old 1, R 2, clip 0.2: V = 1.5 -> clipped V 1.2, max((0.5)^2, (0.8)^2) / 2 = 0.32;
    V = 1.1 (inside) -> 0.81 / 2 = 0.405."""
    loss, stats = ppo_value_loss(torch.tensor([[1.5], [1.1]]), torch.ones(2, 1), torch.full((2, 1), 2.0), torch.ones(2, 1))
    assert loss.tolist() == pytest.approx([0.32, 0.405])
    assert stats["value_clip_fraction"].item() == pytest.approx(0.5)


def test_whitening_uses_only_masked_entries():
    """(2, 4, 6) with a masked 100: mean 4, unbiased variance (4 + 0 + 4) / 2 = 4, std 2 ->
    (-1, 0, 1, 0). Without the mean shift the mean comes back: (-1, 0, 1) + 4 = (3, 4, 5, 0), which
    differs from the input (a variance of exactly 1 would make both the same)."""
    x, mask = torch.tensor([[2.0, 4.0, 6.0, 100.0]]), torch.tensor([[1, 1, 1, 0]])
    assert torch.allclose(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(whiten(x, mask, shift_mean=False), torch.tensor([[3.0, 4.0, 5.0, 0.0]]), atol=1e-6)


def test_adaptive_kl_controller_update():
    """beta 0.1, target 6, horizon 10,000, 512 samples: KL 9 -> error clipped to +0.2 ->
    0.1 * (1 + 0.2 * 512 / 10000) = 0.101024; KL 3 -> error -0.2 -> 0.098976; KL 6 -> unchanged."""
    for kl, expected in ((9.0, 0.101024), (3.0, 0.098976), (6.0, 0.1)):
        c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
        c.update(kl, 512)
        assert c.value == pytest.approx(expected)


def test_entropy_of_uniform_and_certain_distributions():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert torch.allclose(entropy_from_logits(logits), torch.tensor([[math.log(4), 0.0]]), atol=1e-5)


def test_response_mask_stops_after_the_first_eos():
    from alignkit.rl.rollout import response_mask_from

    responses = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    mask, ended = response_mask_from(responses, eos_id=2)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_recomputed_logprobs_match_the_sampling_distribution(tiny_dir):
    """The training forward pass reproduces generate's own log-probs of the sampled tokens (left-padded
    prompts of different lengths, temperature 0.7), so PPO's ratio starts at exactly 1."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rl.rollout import response_logprobs, sample_rollout

    model, tok = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    convs = [[{"role": "user", "content": "Reverse the word apple."}], [{"role": "user", "content": "Hi"}]]
    torch.manual_seed(0)
    rollout = sample_rollout(model, tok, convs, max_new_tokens=8, temperature=0.7)
    assert rollout.responses.shape == (2, 8)
    # generate's own scores for the same tokens: a second generate call with output_scores
    side = tok.padding_side
    tok.padding_side = "left"
    from alignkit.data.templates import render

    enc = tok([render(tok, c, add_generation_prompt=True) for c in convs], return_tensors="pt", padding=True,
              add_special_tokens=False)
    tok.padding_side = side
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=0.7, max_new_tokens=8, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         top_k=None)
    assert torch.equal(out.sequences[:, enc["input_ids"].shape[1]:], rollout.responses[:, :out.sequences.shape[1] - enc["input_ids"].shape[1]])
    scores = torch.stack(out.scores, dim=1).log_softmax(-1)
    sampled = scores.gather(-1, out.sequences[:, enc["input_ids"].shape[1]:].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        mine = response_logprobs(model, rollout, temperature=0.7)
    m = rollout.response_mask[:, :sampled.shape[1]].bool()
    assert torch.allclose(mine[:, :sampled.shape[1]][m], sampled[m], atol=1e-4)


def test_selecting_rows_drops_only_shared_padding_and_keeps_logprobs(tiny_dir):
    """A rollout of prompts of different lengths with responses that ended at different points:
    taking rows 1 and 2 alone removes the prompt columns that are padding in both and the response
    columns after both ended, and their log-probs are those of the full batch."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rl.rollout import Rollout, response_logprobs, select

    model, tok = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    p, eos, pad = 5, tok.eos_token_id, tok.pad_token_id
    ids = torch.tensor([[10, 11, 12, 13, 14, 20, 21, 22, 23, eos],
                        [pad, pad, pad, 15, 16, 24, eos, pad, pad, pad],
                        [pad, pad, 17, 18, 19, 25, 26, eos, pad, pad]])
    att = (ids != pad).long()
    resp_mask = att[:, p:]
    roll = Rollout(ids, att, p, resp_mask, torch.tensor([True, True, True]))
    part = select(roll, torch.tensor([1, 2]))
    assert part.prompt_width == 3 and part.sequences.tolist() == [[pad, 15, 16, 24, eos, pad],
                                                                  [17, 18, 19, 25, 26, eos]]
    assert part.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    with torch.no_grad():
        full = response_logprobs(model, roll)[1:]
        alone = response_logprobs(model, part)
    assert torch.allclose(alone, full[:, :3], atol=1e-5) and not full[:, 3:].any()


def test_rollouts_ignore_the_models_own_generation_settings(tiny_dir):
    """A shipped repetition penalty or n-gram ban would move sampling away from softmax(logits / T),
    which the ratio and the KL assume: rollouts use a generation config of their own, so the same
    seed gives the same tokens with or without those settings on the model."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.rl.rollout import sample_rollout

    model, tok = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    convs = [[{"role": "user", "content": "Reverse the word apple."}]] * 4
    torch.manual_seed(0)
    plain = sample_rollout(model, tok, convs, max_new_tokens=10)
    model.generation_config.repetition_penalty = 3.0
    model.generation_config.no_repeat_ngram_size = 1
    torch.manual_seed(0)
    shipped = sample_rollout(model, tok, convs, max_new_tokens=10)
    assert torch.equal(plain.sequences, shipped.sequences)


def test_uncertainty_penalized_reward_is_mean_minus_coef_times_spread():
    """Two reward models score response 1 at 1 and 3 (mean 2, population std 1) and response 2 at 2
    and 2 (no disagreement): with coef 0.5 the rewards are 2 - 0.5 = 1.5 and 2. One model: its own."""
    from alignkit.rl import ensemble_scorer, uncertainty_penalized

    scores = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    assert torch.allclose(uncertainty_penalized(scores, 0.5), torch.tensor([1.5, 2.0]))
    assert torch.allclose(uncertainty_penalized(scores, 0.0), torch.tensor([2.0, 2.0]))
    assert torch.equal(uncertainty_penalized(scores[:1], 3.0), scores[0])
    a = lambda prompts, responses: torch.tensor([1.0, 2.0])  # noqa: E731
    b = lambda prompts, responses: torch.tensor([3.0, 2.0])  # noqa: E731
    assert torch.allclose(ensemble_scorer([a, b], 0.5)([[], []], ["x", "y"]), torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="expected \\(models, responses\\)"):
        uncertainty_penalized(torch.zeros(3), 1.0)


def test_experience_wires_k3_reward_clip_and_whitened_rewards(tiny_dir):
    """PPO's experience on a real rollout of the tiny model against a perturbed reference, with
    kl.estimator=k3, ppo.reward_clip=0.5 and ppo.whiten_rewards: each quantity must be what the pure
    functions give on the experience's own log-probs, i.e. the stage passes every setting through.
    Raw scores (-2, 0.2, 3) clip to (-0.5, 0.2, 0.5); the KL is k3 (never negative); the rewards are
    the KL-penalised ones whitened without the mean shift."""
    from contextlib import nullcontext

    from alignkit.config import PPOConfig, load_config
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.value import PolicyAndValue, disable_dropout, hidden_size
    from alignkit.rl.experience import Roles, experience
    from alignkit.rl.kl import kl_penalized_rewards
    from alignkit.rl.rollout import sample_rollout

    cfg = load_config(PPOConfig, None, ["model.path=m", "rollout.prompts_path=p", "kl.estimator=k3",
                                        "ppo.reward_clip=0.5", "ppo.whiten_rewards=true", "rollout.no_eos_penalty=0"])
    torch.manual_seed(0)
    policy, tokenizer = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    reference = load_causal_lm(tiny_dir)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    actor = PolicyAndValue(policy, None, hidden_size(policy))
    disable_dropout(actor)
    convs = [[{"role": "user", "content": f"Name a fruit like {w}."}] for w in ("apple", "pear", "plum")]
    roll = sample_rollout(policy, tokenizer, convs, 6)
    raw = torch.tensor([-2.0, 0.2, 3.0])
    roles = Roles(actor, reference.eval(), tokenizer, nullcontext, lambda prompts, texts, rows: raw)
    exp = experience(cfg, roles, roll, convs, kl_coef=0.1, chunk=2)
    mask = roll.response_mask
    assert exp.scores.tolist() == pytest.approx([-0.5, 0.2, 0.5])
    assert torch.allclose(exp.kl, kl_estimate(exp.old_logp, exp.ref_logp, "k3") * mask, atol=1e-6)
    assert (exp.kl >= 0).all() and exp.kl.abs().sum() > 0
    penalized, _ = kl_penalized_rewards(exp.scores, exp.old_logp, exp.ref_logp, mask, 0.1, "k3")
    assert torch.allclose(exp.rewards, whiten(penalized, mask, shift_mean=False), atol=1e-6)
