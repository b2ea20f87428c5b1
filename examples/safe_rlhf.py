"""Safe RLHF on the demo world: PPO, PPO with a fixed cost penalty, and PPO under a cost constraint
(a Lagrange multiplier), judged per safety category on held-out requests.

    alignkit pipeline configs/demo-safe.yaml           # first: world, SFT, reward model, PPO, eval
    python examples/safe_rlhf.py runs/demo-safe         # ~30 minutes on 1 core; runs/demo-safe/safe.md
    python examples/safe_rlhf.py runs/demo-safe --reuse # after adding a variant: trains only the new one
    python examples/safe_rlhf.py runs/safe-seeds --summarize runs/demo-safe-seed*   # the table across seeds

With the demonstrations filtered by a cost model before the SFT model PPO starts from (the
pipeline's sft-filter stage; the variants then start from RUN/sft-filtered and PPO-ptx trains on the
demonstrations it kept; the harm-only cost model drops the compliance to harmful and demeaning
requests, the full one, safe/cost, premise answers too):
    alignkit pipeline configs/demo-safe.yaml 'stages=[pretrain,sft,rm,cost,sft-filter,ppo,eval]'
    python examples/safe_rlhf.py runs/demo-safe
(the pipeline's cost stage trains the harm-only cost model, demo-safe.yaml's cost section, which the
variants with the harm-only cost then use; the same model as `--cost-only` trains under
RUN/safe/cost_harm when cost.seed is world.seed, bit for bit on seed 0), or with the full cost model:
    alignkit pipeline configs/demo-safe.yaml 'stages=[pretrain,sft,rm]'
    python examples/safe_rlhf.py runs/demo-safe --cost-only
    alignkit pipeline configs/demo-safe.yaml 'stages=[pretrain,sft,rm,sft-filter,ppo]' \
        sft_filter_model=runs/demo-safe/safe/cost/model
    python examples/safe_rlhf.py runs/demo-safe --reuse

demo-safe's SFT trains on the demonstrations the world labels correct, refusal or compliance
(sft.data.keep_field / keep_values; the wrong and verbose ones left out), and the variants'
"{demonstrations}" are the rows SFT kept (RUN/safe/sft_kept.jsonl). On the cautious rows alone (the
same rows as "{cautious}"; a probe, not the default: benchmarks/results/demo-safe-seeds.md):
    alignkit pipeline configs/demo-safe.yaml 'stages=[pretrain,sft,rm,ppo]' 'sft.data.keep_values=[correct,refusal]'
    python examples/safe_rlhf.py runs/demo-safe

From the run's SFT model: a cost model (`alignkit rm objective=cost`) on the world's cost.jsonl
(harmful and demeaning requests: the placeholder compliance unsafe and more harmful than the refusal;
premises: a false statement, or a false premise let stand, unsafe and less safe than the answer;
every other answer safe), then PPO runs with the demo's PPO settings and the cost model beside the
reward model: a fixed penalty (lambda
1); safe RLHF (lambda from 1, limit = the SFT policy's own mean cost in the first iteration, so the
policy may not become less safe than SFT); and safe RLHF on max(C, 0) (safety.unsafe_only: only answers
the cost model calls unsafe count), with SFT's level or no unsafe answer at all (limit 0) as the limit;
the last with PPO-ptx (the SFT loss on the run's demonstrations in every update; by default on those
the world marks correct and the refusals, the compliance, wrong and verbose answers left out, and on
the SFT model's own answers to harm requests with inputs no split has: "{anchored}") and a cost model
on the harm rows only; by default the fixed penalty, that safe RLHF, and the same without the
anchored rows (`--variants` for the probes, such as PPO-ptx alone without the constraint, on all the
demonstrations, or on the annotator's preferred responses). The table:
SFT, the pipeline's PPO and the constrained runs; accuracy, refusal and over-refusal per category,
false premises corrected and true ones answered, on new phrasings / new inputs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.config import DataConfig, PipelineConfig, PPOConfig, RMConfig, load_config, pipeline_ppo_config
from alignkit.data.reward import load_rankings
from alignkit.stages.pipeline import handed_on_sft
from alignkit.stages.ppo import run_ppo
from alignkit.stages.rm import run_rm
from alignkit.stages.sft import KEPT_FILE
from alignkit.training.loop import kept_policy
from alignkit.training.metrics import read_metrics
from alignkit.world.datasets import cost_rows_of, jsonl_rows, read_items
from alignkit.world.evaluate import evaluate_models
from alignkit.world.report import cutoff_lines, safety_lines, variant_table

LAGRANGE = ["safety.multiplier=lagrange", "safety.lambda_init=1.0", "safety.lambda_lr=0.5"]
# No unsafe answer allowed (E[max(C, 0)] <= 0): lambda rises while any sample is judged unsafe and
# falls only once none is, where the limits at SFT's level are met by the policy SFT already is.
NO_UNSAFE = [*LAGRANGE, "safety.cost_limit=0.0", "safety.unsafe_only=true"]
# lambda held at 0: the cost model only logged (the PPO-ptx controls).
NO_CONSTRAINT = ["safety.multiplier=fixed", "safety.lambda_init=0.0"]
# PPO-ptx (Ouyang et al. 2022, eq. 2): the SFT loss on the run's own demonstrations ({demonstrations}:
# those the handed-on SFT model was trained on) in every minibatch, so what SFT learned beyond the RL
# prompts' templates is not traded away.
PTX = ["ppo.ptx_coef=1.0", "ppo.ptx_path={demonstrations}"]
# The same SFT term on the annotator's preferred response to each ranked prompt ({preferred}:
# preferred_demonstrations), not on the demonstrations: a third of those to harmful and demeaning
# requests comply and a tenth of those to false premises let them stand (world.sloppy_share), and the
# SFT term keeps what it trains on likely under sampling; the rankings' best responses are the aligned
# ones but for the annotator's label noise.
PTX_PREFERRED = ["ppo.ptx_coef=1.0", "ppo.ptx_path={preferred}"]
# The same SFT term on the demonstrations the world's verifier accepts ({verified}: those the world
# marks correct; the sloppy third, which complies with harmful requests, lets premises stand, refuses
# look-alikes or answers verbosely, left out): the verifier already scores every RL answer, and the
# term then no longer pulls the policy back toward the sloppy answers SFT learned with the rest.
PTX_VERIFIED = ["ppo.ptx_coef=1.0", "ppo.ptx_path={verified}"]
# ... on the demonstrations that state nothing harmful or false ({harmless}: the compliance to harmful
# and demeaning requests and the wrong answers, premises let stand among them, left out; the verbose
# answers and the refusals of look-alikes, unhelpful but neither harmful nor false, kept).
PTX_HARMLESS = ["ppo.ptx_coef=1.0", "ppo.ptx_path={harmless}"]
# ... on the aligned answers and the refusals of look-alikes ({cautious}: over-cautious, never harmful
# or false; the verbose answers left out too). The default since 2026-12-04: over 5 seeds (2400 held-out
# requests per split, one run each) accuracy above PPO's in 5 (71.0 against 67.5%), harmful refusal on
# new inputs at SFT's level in 5, the premise floor in 4 (seed 3: 79.4% corrected); on all the
# demonstrations 3, 5 and 4; on {verified} 5, 3 and 5 (without the refusals, new harmful inputs are
# refused less: 92% on seed 0); on {harmless} 3, 5 and 4 (benchmarks/results/demo-safe-seeds.md).
PTX_CAUTIOUS = ["ppo.ptx_coef=1.0", "ppo.ptx_path={cautious}"]
PTX_ANCHORED = ["ppo.ptx_coef=1.0", "ppo.ptx_path={anchored}"]
PTX_RECOMBINED = ["ppo.ptx_coef=1.0", "ppo.ptx_path={recombined}"]
ANCHOR_PROMPTS = 2000
VARIANTS = {  # name -> overrides of the ppo section ({demonstrations}: demonstrations_path, {preferred}:
    # preferred_path, {verified} / {harmless} / {cautious}: subset_path; a later key wins)
    "ppo + fixed cost penalty": ["safety.multiplier=fixed", "safety.lambda_init=1.0"],
    "safe rlhf": [*LAGRANGE, "safety.limit_from_start=true"],
    # The same on max(C, 0): only unsafe answers count, so the many harmless prompts' very safe
    # answers cannot offset an unsafe one and the multiplier does not fall to 0 while the mean is slack.
    "safe rlhf, unsafe only": [*LAGRANGE, "safety.limit_from_start=true", "safety.unsafe_only=true"],
    "safe rlhf, no unsafe answers": NO_UNSAFE,
    # The same on R - lambda C without the division by 1 + lambda (which, with lambda near 5, scales the
    # reward's preference for a correction over a bare answer down six-fold). Seeds 1 and 4, one run
    # each: no more false premises corrected (66, 57%) and lower accuracy and win rate (README).
    "safe rlhf, no unsafe answers, unscaled reward": [*NO_UNSAFE, "safety.normalize=false"],
    # The same with lambda moving a fifth as fast (it ends near 1.8, not 5). Seeds 1 and 4, one run
    # each: 70, 64% of false premises corrected against 66, 60% (README).
    "safe rlhf, no unsafe answers, slow lambda": [*NO_UNSAFE, "safety.lambda_lr=0.1"],
    # The same with twice the KL coefficient, to hold the policy nearer SFT, which corrects more false
    # premises: seeds 1 and 4, one run each, 70 and 64% corrected (README).
    "safe rlhf, no unsafe answers, kl 0.3": [*NO_UNSAFE, "kl.coef=0.3"],
    # The same with PPO-ptx.
    "safe rlhf, no unsafe answers, ptx": [*NO_UNSAFE, *PTX],
    # ... with a third of the SFT term, or twice the verifier's weight: seeds 2 and 4, one run each, 81
    # and 64%, 79 and 72% of false premises corrected against 77, 77% (README).
    "safe rlhf, no unsafe answers, ptx 0.3": [*NO_UNSAFE, *PTX, "ppo.ptx_coef=0.3"],
    "safe rlhf, no unsafe answers, ptx, verifier 2": [*NO_UNSAFE, *PTX, "rewards=[{fn: world_check, weight: 2.0}]"],
    # The same with a cost model that never saw the premise rows (harm, discrimination and skills only):
    # the full cost model is right on only 84-94% of held-out premise rows, and with lambda near 7 its
    # mistakes outweigh the verifier; premises are left to the verifier and the reward model.
    "safe rlhf, no unsafe answers, ptx, harm-only cost": [*NO_UNSAFE, *PTX],
    "safe rlhf, no unsafe answers, harm-only cost": NO_UNSAFE,  # the same without PPO-ptx
    "safe rlhf, no unsafe answers, ptx on preferred, harm-only cost": [*NO_UNSAFE, *PTX_PREFERRED],
    "safe rlhf, no unsafe answers, ptx on verified, harm-only cost": [*NO_UNSAFE, *PTX_VERIFIED],
    "safe rlhf, no unsafe answers, ptx on harmless, harm-only cost": [*NO_UNSAFE, *PTX_HARMLESS],
    "safe rlhf, no unsafe answers, ptx on cautious, harm-only cost": [*NO_UNSAFE, *PTX_CAUTIOUS],
    # The same with twice the SFT term (every false premise in {cautious} is corrected, so the term pulls
    # toward corrections harder), or with twice the verifier's weight (only the verifier tells a
    # correction from a premise let stand). Seed 3, one run each: 79% of false premises corrected (126 of
    # 160) by both, against 79.4% with neither; not kept (benchmark file).
    "safe rlhf, no unsafe answers, ptx 2 on cautious, harm-only cost": [*NO_UNSAFE, *PTX_CAUTIOUS, "ppo.ptx_coef=2.0"],
    "safe rlhf, no unsafe answers, ptx on cautious, verifier 2, harm-only cost": [
        *NO_UNSAFE, *PTX_CAUTIOUS, "rewards=[{fn: world_check, weight: 2.0}]"],
    # ... or with twice the KL coefficient (PPO's 0.15), to hold the policy nearer SFT on the phrasings RL
    # never sees. 5 seeds, one run each: the premise floor in 5 of 5, but at the margin (seed 3: 128 of 160,
    # 80.0%; 78.1% with ppo.seed 2) and 83.2% corrected on average against 84.2; not kept (benchmark file).
    "safe rlhf, no unsafe answers, ptx on cautious, kl 0.3, harm-only cost": [*NO_UNSAFE, *PTX_CAUTIOUS, "kl.coef=0.3"],
    # ... or with each premise prompt (false and true) three times among the RL prompts (RL_PROMPT_REPEATS):
    # 13% of them are premises, and the verifier, which alone rewards a correction over the bare answer,
    # then sees three times as many. 5 seeds, one run each: the floor in 5 of 5, 84.2% corrected on
    # average as without; seed 3 with ppo.seed 0 / 1 / 2: 81.9 / 85.0 / 76.9%; not kept (benchmark file).
    "safe rlhf, no unsafe answers, ptx on cautious, premise prompts x3, harm-only cost": [*NO_UNSAFE, *PTX_CAUTIOUS],
    # The same on R - lambda max(C, 0), not divided by 1 + lambda: with the limit at 0 the penalty is
    # nonzero on unsafe answers only, and the division weakens the verifier's reward on every safe one
    # (its control, lambda 0, corrects more false premises: 82% against 79% on seed 3). Seed 3, one run:
    # 78% corrected, true premises 99% answered, accuracy 73.0%; not kept (benchmark file).
    "safe rlhf, no unsafe answers, ptx on cautious, harm-only cost, unscaled": [*NO_UNSAFE, *PTX_CAUTIOUS,
                                                                                "safety.normalize=false"],
    # Lagrangian on the raw cost with the first iteration's mean as the limit (no less safe on average
    # than the starting policy), with PPO-ptx on cautious: from SFT on the cautious demonstrations only,
    # where max(C, 0) is 0 from the start and "no unsafe answers" never binds. Seeds 3 and 0 of those runs,
    # one run each: 131 of 143 and 142 of 145 harmful requests with new inputs refused (the default
    # variant 124 and 137, SFT 137 and 145): closer, not at SFT's level; not kept (benchmark file).
    "safe rlhf, limit from start, ptx on cautious, harm-only cost": [*LAGRANGE, "safety.limit_from_start=true",
                                                                     *PTX_CAUTIOUS],
    # "safe rlhf, no unsafe answers, ptx on cautious, harm-only cost" with the SFT term also on the SFT
    # model's own answers to harm requests with inputs of no split
    # ({anchored}: anchored_rows on novel_input_prompts; ANCHOR_PROMPTS of them): the cost model scores a
    # compliance with a new harmful input about as safe as a refusal (it never saw the input;
    # benchmarks/cost_new_inputs.py), so nothing in the RL step keeps SFT's refusal of unfamiliar
    # requests; this holds it where RL has no signal. The default since 2026-12-04 (late night): from SFT
    # without the wrong and verbose demonstrations, harmful refusal on new inputs at SFT's level in 4 of 5
    # seeds (seed 4 one request short; without the anchor in none) and pooled (719 of 727 refused, SFT
    # 718: benchmarks/paired_refusal.py finds no drop, and a drop of 35 without the anchor), the premise
    # floor, accuracy and win rate above PPO's in 5 of 5 (benchmarks/results/demo-safe-seeds.md).
    "safe rlhf, no unsafe answers, ptx on cautious + sft on new inputs, harm-only cost": [*NO_UNSAFE,
                                                                                        *PTX_ANCHORED],
    # ... with twice that SFT term: a probe of whether a firmer hold closes the last misses (seed 4 of the
    # 5-seed table refuses 142 of 144 harmful requests with new inputs, its SFT model 143). Seed 4, one
    # run: 141 of 144; not kept (benchmark file).
    "safe rlhf, no unsafe answers, ptx 2 on cautious + sft on new inputs, harm-only cost": [
        *NO_UNSAFE, *PTX_ANCHORED, "ppo.ptx_coef=2.0"],
    # ... with the SFT term also on SFT's answers to ANCHOR_PROMPTS requests whose inputs join the start
    # of one RL harm input to the end of another ({recombined}: recombined_input_prompts), inputs shaped
    # like real ones: a probe of whether anchoring nearer the held-out inputs closes the last misses.
    # 5 seeds, one run each: at SFT's level on seeds 0, 2, 3, 4 (seed 4 closes its gap), seed 1 three
    # requests short (all "attack a stranger", which SFT misses in 6 phrasings): the misses move
    # between seeds, not away; not kept (benchmarks/results/demo-safe-seeds.md).
    "safe rlhf, no unsafe answers, ptx on cautious + sft on new and recombined inputs, harm-only cost": [
        *NO_UNSAFE, *PTX_RECOMBINED],
    # The control for the PPO-ptx variants: PPO-ptx without the constraint (lambda held at 0: the cost
    # model only logged), to tell what the SFT term does from what the constraint does.
    "ppo + ptx": [*NO_CONSTRAINT, *PTX],
    "ppo + ptx on verified": [*NO_CONSTRAINT, *PTX_VERIFIED],
    "ppo + ptx on harmless": [*NO_CONSTRAINT, *PTX_HARMLESS],
    "ppo + ptx on cautious": [*NO_CONSTRAINT, *PTX_CAUTIOUS],
    "ppo + ptx on cautious, kl 0.3": [*NO_CONSTRAINT, *PTX_CAUTIOUS, "kl.coef=0.3"],
}

# Variants whose cost model learns from some categories of the world's cost rows only: name -> (the cost
# model's directory under RUN_DIR/safe, the categories kept): those named "harm-only cost". Every other
# variant uses "cost", on all rows.
HARM_ROWS = ("cost_harm", ("harm", "discrimination", "skills"))
COST_ROWS = {name: HARM_ROWS for name in VARIANTS if "harm-only cost" in name}
# Variants whose RL prompts repeat some families' prompts: name -> (families, times), each such row
# written that many times in place (RUN_DIR/safe/rl_prompts_NAME.jsonl; rl_prompts_path).
RL_PROMPT_REPEATS = {name: (("false_premise", "true_premise"), 3) for name in VARIANTS if "premise prompts x3" in name}

# The 5-seed table's (README, "Safe RLHF"): the fixed penalty, safe RLHF with the SFT term held on new
# inputs too, and the same without that anchor, its control (with "ppo + ptx on cautious", the
# constraint's control, the defaults until 2026-12-04, late night; the limits above SFT's level left
# lambda at 0 in every seed; PPO-ptx on all the demonstrations until 2026-12-04: "ptx, harm-only cost").
DEFAULT_VARIANTS = ("ppo + fixed cost penalty",
                    "safe rlhf, no unsafe answers, ptx on cautious + sft on new inputs, harm-only cost",
                    "safe rlhf, no unsafe answers, ptx on cautious, harm-only cost")


def cost_model(cfg: PipelineConfig, run_dir: Path, name: str, categories: tuple[str, ...], steps: int,
               reuse: bool) -> Path:
    """Cost model `name` (RUN_DIR/safe/NAME/model) from the run's SFT model, with the reward model's
    settings, on the world's cost rows (only those of `categories`, when given); kept if `reuse`. The
    pipeline's own (RUN_DIR/cost, its cost stage) when it was trained on the same categories."""
    out, rows = run_dir / "safe" / name, run_dir / "world" / "cost.jsonl"
    if reuse and (out / "model" / "config.json").exists():
        return out / "model"
    if "cost" in cfg.stages and set(cfg.cost_categories) == set(categories) and \
            (run_dir / "cost" / "model" / "config.json").exists():
        return run_dir / "cost" / "model"  # the pipeline's cost stage trained this one
    if categories:
        rows = cost_rows_of(rows, categories, run_dir / "safe" / f"{name}.jsonl")
    cost_cfg = load_config(RMConfig, None, [f"model.path={run_dir / 'sft' / 'model'}", f"data.train_path={rows}",
                                            f"output_dir={out}", "objective=cost", "data.max_length=128",
                                            "data.eval_fraction=0.1", f"optim.lr={cfg.rm.optim.lr}", "optim.warmup_steps=20",
                                            "train.batch_size=32", f"train.max_steps={steps}",
                                            f"train.eval_every={steps}", "log.progress=false", f"seed={cfg.world.seed}"])
    return run_rm(cost_cfg)


def preferred_demonstrations(world: Path, out: Path) -> Path:
    """OUT (chat rows for `ppo.ptx_path`): each ranked prompt of WORLD/rankings.jsonl with the response
    its annotator scored best (read as the reward model reads rankings)."""
    rows = []
    for r in load_rankings(str(world / "rankings.jsonl")):
        best = r.responses[max(range(len(r.scores)), key=r.scores.__getitem__)]
        rows.append(json.dumps({"messages": [*r.prompt, {"role": "assistant", "content": best}]}) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(rows))
    return out


def demonstrations_path(run_dir: Path, data: DataConfig) -> Path:
    """The demonstrations the run's handed-on SFT model was trained on, for "{demonstrations}": those
    the reward model kept when the run has the sft-filter stage; else, when the sft section's `data`
    selects rows by a label (data.keep_field), those it keeps (written by kept_demonstrations); else
    all of the world's."""
    kept = handed_on_sft(run_dir).parent / KEPT_FILE
    if kept.is_file():
        return kept
    return selected_path(run_dir) if data.keep_field else run_dir / "world" / "sft.jsonl"


def selected_path(run_dir: Path) -> Path:
    """Where the demonstrations sft.data.keep_field selected are written (RUN_DIR/safe)."""
    return run_dir / "safe" / "sft_kept.jsonl"


def kept_demonstrations(run_dir: Path, data: DataConfig) -> Path:
    """demonstrations_path(run_dir, data), with data.keep_field the world's demonstrations whose field
    has one of data.keep_values written there first (in order, unchanged: what SFT trained on)."""
    out = demonstrations_path(run_dir, data)
    if out == selected_path(run_dir):
        values = {str(v) for v in data.keep_values}
        copies_of_rows(run_dir / "world" / "sft.jsonl", out, data.keep_field, lambda value: int(str(value) in values),
                       f"sft.data.keep_field={data.keep_field} selected the demonstrations SFT trained on")
    return out


# The world's kinds of demonstration each ptx subset keeps: "{verified}" the aligned answers alone,
# "{harmless}" every kind but compliance (harmful, demeaning) and wrong answers (false statements),
# "{cautious}" the aligned answers and the refusals.
PTX_KINDS = {"verified": ("correct",), "harmless": ("correct", "verbose", "refusal"), "cautious": ("correct", "refusal")}


def copies_of_rows(path: Path, out: Path, field: str, copies: Callable[[Any], int], why: str) -> Path:
    """OUT: each row of the JSON Lines file PATH written `copies(row[field])` times (0: left out), in
    place and unchanged. A row without `field` is an error naming its file and line, and `why` it is
    needed (a subset of unlabelled rows would otherwise be silently empty or unweighted)."""
    from alignkit.errors import DataError

    rows = []
    for number, line, row in jsonl_rows(path):
        if field not in row:
            raise DataError(f"{path}:{number}: no '{field}' field; {why}")
        rows += [line + "\n"] * copies(row[field])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(rows))
    return out


def demonstrations_of_kinds(demonstrations: Path, out: Path, kinds: tuple[str, ...]) -> Path:
    """OUT (chat rows for `ppo.ptx_path`): the rows of DEMONSTRATIONS whose world kind is one of `kinds`,
    unchanged. A row without a kind is an error (a subset of unlabelled rows would be silently empty)."""
    return copies_of_rows(demonstrations, out, "kind", lambda kind: int(kind in kinds),
                          f"the ptx subsets {sorted(PTX_KINDS)} need the world's kind of each demonstration "
                          "(correct, verbose, wrong, refusal, compliance)")


def harm_rows_and_known_inputs(rl_prompts: Path, heldout: list[Path]) -> tuple[list[dict], set[str]]:
    """The harm family's RL prompts (harmful requests and their look-alikes) and every input of them and
    of the HELDOUT files: a new input must be none of these."""
    rows = [row for _, _, row in jsonl_rows(rl_prompts) if row.get("family") in ("harmful", "benign")]
    if not rows:
        raise ValueError(f"{rl_prompts}: no harmful or benign request to vary the input of")
    known = {str(row["params"]["x"]) for row in rows}
    for path in heldout:
        known |= {str(row["params"]["x"]) for _, _, row in jsonl_rows(path) if "x" in row.get("params", {})}
    return rows, known


def novel_input_prompts(rl_prompts: Path, heldout: list[Path], n: int, seed: int) -> list[str]:
    """N requests with inputs no split of the world has: RL prompts of the harm family (harmful requests
    and their look-alikes), each with its input replaced by 2-4 of the words of the RL prompts' harm
    inputs in a random order ("break into my own stranger"), drawn again when the phrase is an input
    of the RL prompts or of a held-out file. The phrasing, openers and closers stay the RL prompts'."""
    import random

    rows, known = harm_rows_and_known_inputs(rl_prompts, heldout)
    words = sorted({w for row in rows for w in str(row["params"]["x"]).split()})
    rng, out = random.Random(f"novel:{seed}"), []
    while len(out) < n:
        row = rng.choice(rows)
        x = " ".join(rng.sample(words, rng.randint(2, 4)))
        if x not in known:
            out.append(row["prompt"].replace(str(row["params"]["x"]), x, 1))
    return out


def recombined_input_prompts(rl_prompts: Path, heldout: list[Path], n: int, seed: int) -> list[str]:
    """N requests whose inputs join the start of one RL harm input to the end of another ("break into"
    + "a toxic gas", "make" + "my neighbour's email"): new inputs that keep the verb-then-object shape
    of real requests, which word order drawn at random (novel_input_prompts) mostly loses. Each goes
    into an RL prompt of the harm family in place of its input; inputs of the RL prompts or of a
    held-out file are drawn again."""
    import random

    rows, known = harm_rows_and_known_inputs(rl_prompts, heldout)
    inputs = sorted({tuple(str(row["params"]["x"]).split()) for row in rows})
    splittable = [x for x in inputs if len(x) >= 2]
    if not splittable:
        raise ValueError(f"{rl_prompts}: no harm input of two words or more to recombine")
    rng, out, draws = random.Random(f"recombined:{seed}"), [], 0
    while len(out) < n:
        draws += 1
        if draws > 1000 * n:  # e.g. two inputs whose joins are all known
            raise ValueError(f"{rl_prompts}: recombining the harm inputs gives too few new ones")
        head, tail = rng.choice(splittable), rng.choice(splittable)
        x = " ".join(head[:rng.randint(1, len(head) - 1)] + tail[rng.randint(1, len(tail) - 1):])
        if x not in known:
            row = rng.choice(rows)
            out.append(row["prompt"].replace(str(row["params"]["x"]), x, 1))
    return out


def anchored_rows(cautious: Path, sft_model: Path, prompts: list[str], out: Path, max_new_tokens: int) -> Path:
    """OUT: the rows of CAUTIOUS, then each of PROMPTS with the SFT model's greedy answer: the SFT term
    then also holds the policy to what SFT does on inputs it has never seen, where neither the reward
    nor the cost model can tell a harmful request from a harmless one (the RL step otherwise moves
    those answers with nothing to guide it)."""
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses

    model, tokenizer = load_causal_lm(sft_model), load_tokenizer(sft_model)
    turns = [[{"role": "user", "content": p}] for p in prompts]
    answers = generate_responses(model, tokenizer, turns, max_new_tokens, batch_size=128)
    rows = [json.dumps({"messages": [*t, {"role": "assistant", "content": a}], "kind": "sft-answer"}) + "\n"
            for t, a in zip(turns, answers)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cautious.read_text() + "".join(rows))
    return out


def subset_path(run_dir: Path, subset: str) -> Path:
    """Where a run's demonstrations for "{SUBSET}" (a key of PTX_KINDS) are written (RUN_DIR/safe)."""
    return run_dir / "safe" / f"ptx_{subset}.jsonl"


def anchored_path(run_dir: Path) -> Path:
    """Where a run's "{anchored}" rows are written (RUN_DIR/safe): {cautious} and SFT's answers to new inputs."""
    return run_dir / "safe" / "ptx_anchored.jsonl"


def recombined_path(run_dir: Path) -> Path:
    """Where a run's "{recombined}" rows are written (RUN_DIR/safe): {anchored} and SFT's answers to
    requests with recombined inputs."""
    return run_dir / "safe" / "ptx_recombined.jsonl"


def preferred_path(run_dir: Path) -> Path:
    """Where a run's preferred responses for "{preferred}" are written (RUN_DIR/safe)."""
    return run_dir / "safe" / "ptx_preferred.jsonl"


def repeated_prompts(prompts: Path, out: Path, families: tuple[str, ...], times: int) -> Path:
    """OUT: the rows of PROMPTS (the world's RL prompts), each of `families` `times` times in place and
    the rest once. A row without a family is an error naming its file and line."""
    return copies_of_rows(prompts, out, "family", lambda family: times if family in families else 1,
                          f"repeating {', '.join(families)} prompts needs the world's family of each prompt")


def rl_prompts_path(run_dir: Path, name: str) -> Path:
    """The RL prompts of variant `name`: the world's, or its repeated copy (RL_PROMPT_REPEATS)."""
    if name not in RL_PROMPT_REPEATS:
        return run_dir / "world" / "rl_prompts.jsonl"
    return run_dir / "safe" / f"rl_prompts_{variant_dir_name(name)}.jsonl"


def variant_dir_name(name: str) -> str:
    """Variant `name` as a directory name under RUN_DIR/safe."""
    return name.replace(",", "").replace(" ", "_").replace("+", "and")


def variant_config(config: str, run_dir: Path, name: str, cost: Path, out: Path) -> PPOConfig:
    """The PPO config of variant `name` on run `run_dir`: the pipeline config's ppo section, the run's
    SFT policy, reward model and RL prompts, the cost model `cost`, and the variant's overrides."""
    world = run_dir / "world"
    sft_data = load_config(PipelineConfig, config, [f"run_dir={run_dir}"]).sft.data
    paths = {"demonstrations": demonstrations_path(run_dir, sft_data), "preferred": preferred_path(run_dir),
             "anchored": anchored_path(run_dir), "recombined": recombined_path(run_dir),
             **{subset: subset_path(run_dir, subset) for subset in PTX_KINDS}}
    overrides = []
    for o in VARIANTS[name]:
        for key, path in paths.items():
            o = o.replace(f"{{{key}}}", str(path))
        overrides.append(o)
    variant = load_config(PipelineConfig, config, [f"run_dir={run_dir}", "ppo.log.progress=false",
                                                    f"ppo.safety.cost_model={cost}", *(f"ppo.{o}" for o in overrides)])
    ppo_cfg = pipeline_ppo_config(variant.ppo, out, handed_on_sft(run_dir), run_dir / "rm" / "model",
                                  {"rl_prompts": rl_prompts_path(run_dir, name),
                                   "rl_eval_prompts": world / "rl_eval_prompts.jsonl"})
    ppo_cfg.validate(name)
    return ppo_cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished run of configs/demo-safe.yaml")
    p.add_argument("--config", help="the pipeline config whose ppo section the variants take (default: RUN_DIR/pipeline.yaml, "
                   "the run's own settings with any overrides it ran with; else configs/demo-safe.yaml)")
    p.add_argument("--cost-steps", type=int, default=900,
                   help="cost-model steps (300 left it 79.5%% right on premise rows, 900 93.9%%; seed 0)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(DEFAULT_VARIANTS), metavar="NAME",
                   help=f"the constrained variants to train and compare, of: {'; '.join(VARIANTS)} "
                        f"(default: {'; '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--reuse", action="store_true",
                   help="keep the cost model and every variant already trained under RUN_DIR/safe (train only new ones)")
    p.add_argument("--cost-only", action="store_true",
                   help="train only the cost models (RUN_DIR/safe/cost, and RUN_DIR/safe/cost_harm for the chosen "
                        "variants with the harm-only cost) and stop: a scorer for the pipeline's sft-filter stage "
                        "(sft_filter_model=RUN_DIR/safe/cost_harm/model), before its PPO; a later run with --reuse keeps them")
    p.add_argument("--summarize", type=Path, nargs="+", metavar="SEED_RUN",
                   help="instead: the table across seeds from these runs' safe.json, written to RUN_DIR/safe-seeds.md")
    args = p.parse_args()
    if args.summarize:
        from alignkit.world.seeds import safety_seeds_markdown

        per_seed = {}
        for run in args.summarize:
            per_seed[load_config(PipelineConfig, str(run / "pipeline.yaml")).world.seed] = json.loads(
                (run / "safe.json").read_text())
        table = safety_seeds_markdown(per_seed)
        args.run_dir.mkdir(parents=True, exist_ok=True)
        (args.run_dir / "safe-seeds.md").write_text(table)
        print(table)
        return
    needed = ("world/cost.jsonl", "sft/model") if args.cost_only else ("world/cost.jsonl", "sft/model", "rm/model", "ppo/model")
    missing = [f for f in needed if not (args.run_dir / f).exists()]
    if missing:
        p.error(f"{args.run_dir} is not a finished run of configs/demo-safe.yaml (missing {', '.join(missing)}); "
                f"run `alignkit pipeline configs/demo-safe.yaml run_dir={args.run_dir}` first")
    own = args.run_dir / "pipeline.yaml"
    config = args.config or str(own if own.exists() else Path(__file__).resolve().parents[1] / "configs" / "demo-safe.yaml")
    cfg = load_config(PipelineConfig, config, [f"run_dir={args.run_dir}"])
    world, out_root = args.run_dir / "world", args.run_dir / "safe"
    sft = handed_on_sft(args.run_dir)

    # Each cost model is trained once per invocation (two variants may share one; COST_ROWS).
    costs = {"cost": cost_model(cfg, args.run_dir, "cost", (), args.cost_steps, args.reuse)}
    if args.cost_only:
        for name, categories in {COST_ROWS[n] for n in args.variants if n in COST_ROWS}:
            costs[name] = cost_model(cfg, args.run_dir, name, categories, args.cost_steps, args.reuse)
        print("cost models: " + ", ".join(str(path) for path in costs.values()))
        return
    cost_figures = read_metrics(out_root / "cost" / "metrics.jsonl")[-1]
    # The ptx rows of the variants that name them (after --cost-only, which needs none).
    def named(key: str) -> bool:  # whether a chosen variant's overrides name "{KEY}"
        return any(f"{{{key}}}" in o for name in args.variants for o in VARIANTS[name])

    if named("preferred"):
        preferred_demonstrations(world, preferred_path(args.run_dir))
    demonstrations = kept_demonstrations(args.run_dir, cfg.sft.data)
    recombined = named("recombined")
    anchored = recombined or named("anchored")  # {recombined} extends {anchored}, which extends {cautious}
    for subset, kinds in PTX_KINDS.items():
        if named(subset) or (subset == "cautious" and anchored):
            demonstrations_of_kinds(demonstrations, subset_path(args.run_dir, subset), kinds)
    heldout = [world / "eval_heldout_phrasing.jsonl", world / "eval_heldout_input.jsonl"]
    if anchored:
        prompts = novel_input_prompts(world / "rl_prompts.jsonl", heldout, ANCHOR_PROMPTS, cfg.world.seed)
        anchored_rows(subset_path(args.run_dir, "cautious"), sft, prompts, anchored_path(args.run_dir),
                      cfg.eval.max_new_tokens)
    if recombined:
        prompts = recombined_input_prompts(world / "rl_prompts.jsonl", heldout, ANCHOR_PROMPTS, cfg.world.seed)
        anchored_rows(anchored_path(args.run_dir), sft, prompts, recombined_path(args.run_dir),
                      cfg.eval.max_new_tokens)
    for name in args.variants:
        if name in RL_PROMPT_REPEATS:
            repeated_prompts(world / "rl_prompts.jsonl", rl_prompts_path(args.run_dir, name), *RL_PROMPT_REPEATS[name])

    first = args.run_dir / "sft" / "model"  # with the sft-filter stage, the SFT model before the filter
    policies = {**({"sft-unfiltered": first} if sft != first else {}), "sft": sft,
                "ppo": kept_policy(args.run_dir / "ppo" / "model", cfg.ppo.keep_best)}
    summary = {}
    for name in args.variants:
        out = out_root / variant_dir_name(name)
        cost_name, categories = COST_ROWS.get(name, ("cost", ()))
        if cost_name not in costs:
            costs[cost_name] = cost_model(cfg, args.run_dir, cost_name, categories, args.cost_steps, args.reuse)
        ppo_cfg = variant_config(config, args.run_dir, name, costs[cost_name], out)
        if not (args.reuse and (out / "model" / "config.json").exists()):
            print(f"== {name}", flush=True)
            run_ppo(ppo_cfg)
        rows = [r for r in read_metrics(out / "metrics.jsonl") if "cost" in r]
        policies[name] = kept_policy(out / "model", ppo_cfg.keep_best)
        summary[name] = {"cost first": f"{rows[0]['cost']:+.2f}", "cost last": f"{rows[-1]['cost']:+.2f}",
                         "lambda last": f"{rows[-1]['lambda']:.2f}", "limit": f"{rows[-1]['cost_limit']:+.2f}"}

    splits = {"heldout_phrasing": read_items(world / "eval_heldout_phrasing.jsonl"),
              "heldout_input": read_items(world / "eval_heldout_input.jsonl")}
    results = evaluate_models(policies, splits, "sft", cfg.eval.max_new_tokens, cfg.eval.batch_size)
    table = variant_table(results, "sft", summary) + "\n" + "\n".join(safety_lines(results) + cutoff_lines(results)) + "\n"
    table += (f"\nCost model, held-out: accuracy {100 * cost_figures['eval_accuracy']:.1f}%, unsafe recall "
              f"{100 * cost_figures['eval_unsafe_recall']:.1f}%, safe recall {100 * cost_figures['eval_safe_recall']:.1f}%, "
              f"pair accuracy {100 * cost_figures.get('eval_pair_accuracy', float('nan')):.1f}%.\n")
    (args.run_dir / "safe.md").write_text(table)
    (args.run_dir / "safe.json").write_text(json.dumps({"summary": summary, "cost_model": cost_figures,
                                                        "results": results}, indent=2, default=str) + "\n")
    print(table)


if __name__ == "__main__":
    main()
