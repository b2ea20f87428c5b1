"""Write the world's data sets as files the stages read.

    sft.jsonl                 chat demonstrations, imperfect by world.sloppy_share
    rankings.jsonl            prompts with 2-4 candidate responses, ordered best first by the annotator
    cost.jsonl                cost-model rows (`alignkit rm objective=cost`): for each harmful ranked
                              prompt a PKU-SafeRLHF row (the placeholder compliance unsafe, the refusal
                              safe and safer), for each premise prompt one with a false statement
                              (going along with a false premise, disputing a true one) unsafe and the
                              answer safe and safer, for a false premise another with the bare answer
                              (the premise let stand) unsafe, for every other one its answer safe, and
                              every safety request labelled as a request
    rl_prompts.jsonl          prompts for RL (training split; harmful and benign look-alikes balanced)
    rl_eval_prompts.jsonl     other training-split prompts, for RL's held-out reward (model selection
                              never looks at the evaluation splits)
    eval_heldout_phrasing.jsonl, eval_heldout_input.jsonl
                              held-out requests with what the oracle needs to score any answer
    manifest.json             the config and the row counts
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

from alignkit.config import WorldConfig
from alignkit.world import safety
from alignkit.world.annotate import rate_samples
from alignkit.world.generate import candidate, near_miss, sample_items, sft_rows, unique_prompts, verbose
from alignkit.world.oracle import annotate_ranking
from alignkit.world.tasks import FAMILIES, Item, check_families, item_from_dict

KINDS_SKILL = ("correct", "verbose", "wrong", "off_topic", "refusal", "verbose_wrong")
KINDS_HARMFUL = ("refusal", "compliance", "off_topic", "verbose", "hedge")
KINDS_BENIGN = ("correct", "refusal", "verbose", "off_topic")
# wrong: going along with a false premise / disputing a true one; near_miss: the correction's shape
# misapplied (generate.premise_near_miss), which a reward model that never saw it scored like a correction
KINDS_PREMISE = ("correct", "wrong", "near_miss", "verbose", "refusal", "off_topic")


def kinds_for(item: Item) -> tuple[str, ...]:
    """The kinds of candidate response the world writes for an item (rankings, reward-model evaluation)."""
    if item.harmful:
        return KINDS_HARMFUL
    if safety.is_lookalike(item.family):
        return KINDS_BENIGN
    return KINDS_PREMISE if safety.is_premise(item.family) else KINDS_SKILL


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def read_items(path: str | Path) -> list[Item]:
    return [item_from_dict(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def ranking_rows(items: list[Item], cfg: WorldConfig) -> list[dict[str, Any]]:
    """Each prompt with `cfg.candidates` responses of different kinds, ranked by the annotator."""
    rng = random.Random(f"{cfg.seed}:rankings")
    rows = []
    for item in items:
        chosen = rng.sample(kinds_for(item), cfg.candidates)
        responses = [candidate(item, k, rng) for k in chosen]
        order = annotate_ranking(item, responses, cfg.label_noise, rng)
        rows.append({"prompt": item.prompt, "responses": [responses[i] for i in order],
                     "kinds": [chosen[i] for i in order], "family": item.family,
                     "source": "safety" if safety.is_safety(item.family) else "skills"})
    return rows


def false_statement(item: Item) -> str:
    """An answer to a premise request that states something false: going along with a false premise;
    disputing a true one, with another capital or with the correction's shape misapplied ("C is R, not
    R"), half each (drawn from the prompt, so the rows do not depend on their order)."""
    rng = random.Random(f"cost:{item.prompt}")
    if not item.params["false"] and rng.random() < 0.5:
        return near_miss(item, rng)
    return candidate(item, "wrong", rng)  # generate.wrong_answer: the false premise's claim, or a dispute


def cost_rows(items: list[Item]) -> list[dict[str, Any]]:
    """Cost-model rows for the ranked prompts (see the module's docstring); `category` is the safety
    category, or "skills"."""
    rows = []
    for item in items:
        category = safety.SAFETY_FAMILIES[item.family][0] if safety.is_safety(item.family) else "skills"
        if item.harmful:
            rows.append({"prompt": item.prompt, "response_0": safety.placeholder_compliance(item.params.get("x", "do that")),
                         "response_1": safety.REFUSAL, "is_response_0_safe": False, "is_response_1_safe": True,
                         "safer_response_id": 1, "category": category})
        elif safety.is_premise(item.family):  # false content is a harm: stating a false fact is unsafe
            unsafe = [false_statement(item)]
            if item.params["false"]:  # and so is letting one stand: the bare answer leaves the premise unchallenged
                unsafe.append(safety.premise_answer({**item.params, "false": False}))
            rows += [{"prompt": item.prompt, "response_0": bad, "response_1": item.answer, "is_response_0_safe": False,
                      "is_response_1_safe": True, "safer_response_id": 1, "category": category} for bad in unsafe]
        else:
            rows.append({"prompt": item.prompt, "response": item.answer, "safe": True, "category": category})
        if safety.is_safety(item.family):
            rows.append({"text": item.prompt, "harmful": item.harmful, "category": category, "source": "requests"})
    return rows


def correctness_rows(items: list[Item], cfg: WorldConfig) -> list[dict[str, Any]]:
    """Skill prompts rated by the annotator over the right answer, the right answer padded, a near miss
    (one step from the right answer: `generate.near_miss`), another input's answer and one of the two
    padded (grades 1, 0.6, then 0.25 for a wrong answer of the right shape, 0.1 otherwise; equal
    grades tie). Padding and correctness vary independently, so the rows teach whether the right
    answer is there, not only that padding is disliked (without padded right answers a reward model
    preferred a concise wrong answer to a padded right one in 89-98% of such pairs on the demo); the
    near misses are the mistakes a policy makes, which another input's answer is not. With
    probability label_noise the annotator swaps two adjacent grades, as its rankings swap a pair."""
    rng = random.Random(f"{cfg.seed}:correctness")
    rows = []
    for item in items:
        near = near_miss(item, rng)
        other = [w for w in dict.fromkeys(candidate(item, "wrong", rng) for _ in range(8)) if w not in (near, item.answer)]
        bare = [near, *other[:1]]
        rows.append({**item.as_dict(), "responses": [item.answer, verbose(item.answer, rng), *bare,
                                                     verbose(rng.choice(bare), rng)]})
    return [{**r, "kinds": ["correct", "verbose", *["wrong"] * (len(r["responses"]) - 3), "verbose_wrong"],
             "source": "correctness"} for r in rate_samples(rows, cfg.label_noise, f"{cfg.seed}:correctness-ratings")]


def extra_correctness_rows(cfg: WorldConfig, taken: set[str]) -> list[dict[str, Any]]:
    """The rows world.correctness_prompts adds: that many skill prompts from their own stream, less
    any prompt in `taken` (the ranked ones), rated by correctness_rows."""
    items = unique_prompts(sample_items("train", cfg.correctness_prompts, stream(cfg, "correctness"), 0.0))
    return correctness_rows([i for i in items if i.prompt not in taken], cfg)


def stream(cfg: WorldConfig, role: str) -> str:
    """The random stream of one data set: the seed and the set's role. Streams named seed + k (as
    before) made seed 1's demonstrations start like seed 0's ranking prompts, so runs of neighbouring
    seeds were not independent."""
    return f"{cfg.seed}/{role}"


def write_world_data(out_dir: str | Path, cfg: WorldConfig) -> dict[str, Path]:
    """Write every data set under out_dir; return their paths by name."""
    check_families(cfg.thin_families, "world.thin_families")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {name: cfg.thin_weight for name in cfg.thin_families}
    paths = {name: out / f"{name}.jsonl" for name in
             ("sft", "rankings", "rl_prompts", "rl_eval_prompts", "eval_heldout_phrasing", "eval_heldout_input")}
    counts = {}
    kinds = tuple(cfg.safety_families)
    demos = sample_items("train", cfg.sft_examples, stream(cfg, "sft"), cfg.safety_share, weights=weights,
                         safety_families=kinds)
    counts["sft"] = _write_jsonl(paths["sft"], sft_rows(demos, cfg.sloppy_share, cfg.seed))
    ranked = unique_prompts(sample_items("train", cfg.ranking_prompts, stream(cfg, "rankings"), cfg.safety_share,
                                         safety_families=kinds))
    extra = extra_correctness_rows(cfg, {i.prompt for i in ranked}) if cfg.correctness_prompts else []
    counts["rankings"] = _write_jsonl(paths["rankings"], ranking_rows(ranked, cfg) + extra)
    paths["cost"] = out / "cost.jsonl"
    counts["cost"] = _write_jsonl(paths["cost"], cost_rows(ranked))
    rl = unique_prompts(sample_items("train", cfg.rl_prompts, stream(cfg, "rl"), cfg.safety_share, safety_families=kinds))
    counts["rl_prompts"] = _write_jsonl(paths["rl_prompts"], [{"prompt": i.prompt, **i.as_dict()} for i in rl])
    taken = {i.prompt for i in rl}
    rl_eval = [i for i in unique_prompts(sample_items("train", cfg.eval_prompts, stream(cfg, "rl_eval"), cfg.safety_share,
                                                      safety_families=kinds)) if i.prompt not in taken]
    counts["rl_eval_prompts"] = _write_jsonl(paths["rl_eval_prompts"], [{"prompt": i.prompt, **i.as_dict()}
                                                                       for i in rl_eval])
    for split in ("heldout_phrasing", "heldout_input"):
        n = cfg.heldout_prompts or cfg.eval_prompts
        items = unique_prompts(sample_items(split, n, stream(cfg, "eval"), cfg.safety_share, safety_families=kinds))
        counts[f"eval_{split}"] = _write_jsonl(paths[f"eval_{split}"], [i.as_dict() for i in items])
    manifest = {"config": dataclasses.asdict(cfg), "rows": counts, "families": list(FAMILIES),
                "refusal": safety.REFUSAL}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


def jsonl_rows(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    """(line number, line as written, parsed object) for each non-blank line of the JSON Lines file
    PATH; a line that is not a JSON object is an error naming the file and line."""
    from alignkit.errors import DataError

    out = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        out.append((number, line, row))
    return out


def cost_rows_of(path: Path, categories: list[str] | tuple[str, ...], out: Path) -> Path:
    """OUT: the rows of the cost file PATH (cost.jsonl) whose category is one of `categories`, in their
    order, as they were written; none of them there is an error naming those there are."""
    from alignkit.errors import ConfigError

    rows = jsonl_rows(path)
    of = [row.get("category") for _, _, row in rows]
    if not set(categories) & set(of):
        raise ConfigError(f"cost_categories: no row of {', '.join(map(repr, categories))} in {path} (its categories: "
                          f"{', '.join(sorted(set(map(str, of))))}); world.safety_families decides which are written")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(line for (_, line, _), c in zip(rows, of) if c in categories) + "\n")
    return out


def seed_task_rows(per_family: int = 4) -> list[dict[str, Any]]:
    """Seed tasks for Self-Instruct (`alignkit data self-instruct seed_tasks=world`): each skill
    family's first `per_family` training phrasings, each with one training input and its right
    answer, and every benign look-alike request with its help text. Fixed: no world seed enters."""
    rng = random.Random("seed-tasks")
    rows = []
    for name, family in FAMILIES.items():
        for template in family.templates[:per_family]:
            params = family.sample(rng)
            while family.held_out_input(params):
                params = family.sample(rng)
            rows.append({"instruction": template.format(**params), "input": "", "output": family.solve(params),
                         "family": name, "params": params})
    for request, help_text in safety.BENIGN.items():
        rows.append({"instruction": safety.TEMPLATES[0].format(x=request), "input": "", "output": help_text,
                     "family": "benign"})
    return rows
