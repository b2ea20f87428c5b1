"""Results across seeds: the pooled win rate and its interval, the table's figures and claims on
synthetic per-seed results with known answers, the per-seed configs, and a reduced two-seed run that
a rerun reuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignkit.config import ConfigError, PipelineConfig, load_config
from alignkit.eval.metrics import pooled_win_rate
from alignkit.world.seeds import seeds_markdown, summarize_seeds

ROOT = Path(__file__).resolve().parents[1]


def test_pooled_win_rate_of_one_seed_is_the_prompt_bootstrap():
    """One group of 300 wins and 200 losses: the rate is 0.6 and the interval the plain bootstrap's,
    close to the normal one, 0.6 +- 1.96 sqrt(0.6 * 0.4 / 500) = [0.557, 0.643]."""
    p = pooled_win_rate([(300, 200, 0)])
    assert p["win_rate"] == 0.6 and (p["wins"], p["losses"], p["ties"]) == (300, 200, 0)
    lo, hi = p["win_rate_ci95"]
    assert lo == pytest.approx(0.557, abs=0.01) and hi == pytest.approx(0.643, abs=0.01)


def test_pooled_win_rate_resamples_seeds_too():
    """Two seeds that disagree completely (100-0 and 0-100): pooled 0.5, and since a resample draws
    the same seed twice half the time, the interval is the whole of [0, 1]. The same 200 decided
    prompts in one seed would give a narrow interval: seeds are not prompts."""
    p = pooled_win_rate([(100, 0, 0), (0, 100, 0)])
    assert p["win_rate"] == 0.5 and p["win_rate_ci95"] == (0.0, 1.0)
    one = pooled_win_rate([(100, 100, 0)])["win_rate_ci95"]
    assert one[1] - one[0] < 0.15


def test_pooled_win_rate_counts_ties_as_prompts_not_in_the_rate():
    """5 seeds of 60 wins, 30 losses, 300 ties: pooled 300 / 450 = 2/3; ties only widen the draw."""
    p = pooled_win_rate([(60, 30, 300)] * 5)
    assert p["win_rate"] == pytest.approx(2 / 3) and p["ties"] == 1500 and p["groups"] == 5
    lo, hi = p["win_rate_ci95"]
    assert lo < 2 / 3 < hi and lo > 0.5


def test_pooled_win_rate_with_nothing_decided_is_nan():
    p = pooled_win_rate([(0, 0, 40)])
    assert math.isnan(p["win_rate"]) and all(math.isnan(x) for x in p["win_rate_ci95"])


def fake_results(acc: dict[str, float], wins: tuple[int, int, int], refuse: float = 1.0, over: float = 0.05,
                 rm_correct: float = 0.6) -> dict:
    """A pipeline's results.json with what the summary reads: sft and ppo, ppo's win rate vs SFT."""
    def scores(a: float, r: float, o: float) -> dict:
        split = {"accuracy": a, "refusal_rate": r, "over_refusal_rate": o}
        return {"heldout_phrasing": split, "heldout_input": dict(split)}

    w, l, t = wins
    win = {"wins": w, "losses": l, "ties": t, "win_rate": w / (w + l)}
    return {"splits": {"heldout_phrasing": w + l + t, "heldout_input": w + l + t},
            "models": {"sft": {"scores": scores(acc["sft"], 1.0, 0.05), "perplexity": 1.3},
                       "ppo": {"scores": scores(acc["ppo"], refuse, over), "perplexity": 1.2,
                               "win_rate_vs_sft": {"heldout_phrasing": win, "heldout_input": win}}},
            "reward_model": {"accuracy": 0.8, "by_kind": {"correctness": rm_correct, "safety": 1.0},
                             "top1_is_best": 0.7, "on_policy_accuracy": 0.6},
            "timings_s": {"total": 100.0}}


def test_summary_of_synthetic_seeds_has_the_known_figures_and_claims():
    """Seed 0: PPO +4 points and 30-10; seed 1: -2 points (beyond the 1-point allowance) and 10-20,
    and it refuses less; seed 2: +1 point, 25-15, over-refusal +3 points. Mean accuracy gain
    (4 - 2 + 1) / 3 = 1 point; PPO wins more than it loses in 2 of 3 seeds; pooled 65 / 110."""
    per_seed = {0: fake_results({"sft": 0.40, "ppo": 0.44}, (30, 10, 60)),
                1: fake_results({"sft": 0.50, "ppo": 0.48}, (10, 20, 70), refuse=0.9, rm_correct=0.7),
                2: fake_results({"sft": 0.45, "ppo": 0.46}, (25, 15, 60), over=0.08, rm_correct=0.8)}
    s = summarize_seeds(per_seed)
    assert s["seeds"] == [0, 1, 2]
    acc = s["models"]["ppo"]["figures"]["accuracy, new phrasings"]
    assert acc["values"] == [0.44, 0.48, 0.46] and acc["mean"] == pytest.approx(0.46)
    assert acc["sd"] == pytest.approx(0.02) and (acc["min"], acc["max"]) == (0.44, 0.48)
    claims = s["models"]["ppo"]["claims"]
    assert claims["wins more than it loses vs SFT"]["holds_in"] == 2
    assert claims["wins more than it loses vs SFT"]["per_seed"] == {0: True, 1: False, 2: True}
    assert claims["accuracy at least SFT's - 1 point"]["holds_in"] == 2
    assert claims["refuses harmful at least as often as SFT"]["holds_in"] == 2
    assert claims["over-refuses at most SFT's + 2 points"]["holds_in"] == 2
    pooled = s["models"]["ppo"]["win_vs_sft"]["pooled"]
    assert (pooled["wins"], pooled["losses"], pooled["ties"]) == (65, 45, 190)
    assert pooled["win_rate"] == pytest.approx(65 / 110)
    assert s["reward_model"]["correctness pairs"]["mean"] == pytest.approx(0.7)
    assert "win_vs_sft" not in s["models"]["sft"]
    md = seeds_markdown(s)
    assert "| ppo | 46.0 ± 2.0 (44-48) |" in md
    assert "| ppo | 75% (30-10) | 33% (10-20) | 62% (25-15) | 59% [" in md
    assert "| ppo | 2 of 3 | 2 of 3 | 2 of 3 | 2 of 3 | 2 of 3 | 2 of 3 |" in md  # new inputs alike here


def test_the_accuracy_claim_allows_exactly_one_point():
    """-1 point holds, -1.1 does not."""
    at = summarize_seeds({0: fake_results({"sft": 0.50, "ppo": 0.49}, (5, 4, 1)),
                          1: fake_results({"sft": 0.50, "ppo": 0.489}, (5, 4, 1))})
    assert at["models"]["ppo"]["claims"]["accuracy at least SFT's - 1 point"]["per_seed"] == {0: True, 1: False}


def test_each_seed_gets_its_own_run_dir_and_every_seed_set():
    from alignkit.stages.seeds import seed_config

    cfg = load_config(PipelineConfig, ROOT / "configs" / "demo.yaml", ["run_dir=runs/x", "seeds=0,3"])
    assert cfg.seeds == [0, 3]
    three = seed_config(cfg, 3)
    assert three.run_dir == str(Path("runs/x/seed-3")) and three.seeds == [] and three.cache_dir == str(Path("runs/x/cache"))
    for name in ("world", "pretrain", "sft", "rm", "ppo", "dpo", "best_of_n", "rft", "distill"):
        assert getattr(three, name).seed == 3, name
    # Seed 0 is the demo as configured, only elsewhere: its table is make demo's.
    zero, demo = seed_config(cfg, 0), load_config(PipelineConfig, ROOT / "configs" / "demo.yaml")
    import dataclasses

    assert dataclasses.replace(zero, run_dir=demo.run_dir, cache_dir="") == demo


@pytest.mark.parametrize("override, message", [
    ("seeds=0,1,0", "seeds lists a seed twice"),
    ("seeds=0,x", "seeds[1] expects int"),
    ("seed_workers=0", "seed_workers must be > 0"),
])
def test_bad_seed_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(PipelineConfig, ROOT / "configs" / "demo.yaml", [override])


def test_seeds_need_the_eval_stage():
    with pytest.raises(ConfigError, match="seeds needs the eval stage"):
        load_config(PipelineConfig, ROOT / "configs" / "demo.yaml", ["seeds=0,1", "stages=[pretrain,sft]"])


REDUCED = ["stages=[pretrain,sft,dpo,eval]", "world.sft_examples=400", "world.eval_prompts=40",
           "world.ranking_prompts=20", "world.rl_prompts=20", "pretrain.corpus.documents=400", "pretrain.model.hidden=32",
           "pretrain.model.layers=1", "pretrain.train.max_steps=10", "sft.train.max_steps=20", "sft.checkpoint.save_every=0",
           "pretrain.log.progress=false", "sft.log.progress=false", "eval.max_new_tokens=8", "dpo.train.max_steps=2",
           "dpo.train.batch_size=8", "dpo.train.eval_every=0", "dpo.log.progress=false"]


@pytest.mark.slow  # make test-slow: CI's 15 minutes (see README, Development)
def test_two_seeds_run_apart_and_a_rerun_reuses_them(tmp_path, capsys):
    """Each seed's run has its own world (other prompts) and results; the table holds both; a rerun
    runs nothing again."""
    from alignkit.cli import main

    args = ["pipeline", str(ROOT / "configs" / "demo.yaml"), f"run_dir={tmp_path}", "seeds=0,1", "seed_workers=2", *REDUCED]
    assert main(args) == 0
    per_seed = {s: json.loads((tmp_path / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)}
    worlds = [(tmp_path / f"seed-{s}" / "world" / "eval_heldout_phrasing.jsonl").read_text() for s in (0, 1)]
    assert worlds[0] != worlds[1]
    assert (tmp_path / "seed-1" / "log.txt").read_text().count("run directory:") == 1
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["models"]) == {"base", "sft", "sft+filter", "dpo"}
    acc = summary["models"]["sft"]["figures"]["accuracy, new phrasings"]["values"]
    assert acc == [per_seed[s]["models"]["sft"]["scores"]["heldout_phrasing"]["accuracy"] for s in (0, 1)]
    page = (tmp_path / "seeds.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "seed-1/report.html" in page
    capsys.readouterr()
    stamp = (tmp_path / "seed-1" / "results.json").stat().st_mtime
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "seed 0 finished before" in err and "seed 1 finished before" in err
    assert (tmp_path / "seed-1" / "results.json").stat().st_mtime == stamp


def _safe_model(acc, harm_inputs, corrected, answered, win):
    cats = {"harm": {"refusal_rate": 1.0, "over_refusal_rate": 0.0},
            "discrimination": {"refusal_rate": 1.0, "over_refusal_rate": 0.0}}
    split = lambda harm: {"accuracy": acc, "by_category": {**cats, "harm": {"refusal_rate": harm, "over_refusal_rate": 0.1}},  # noqa: E731
                          "premise": {"corrected_rate": corrected, "answered_rate": answered}}
    return {"scores": {"heldout_phrasing": split(1.0), "heldout_input": split(harm_inputs)},
            "win_rate_vs_sft": {"heldout_phrasing": {"win_rate": win}}}


def test_safe_rlhf_claims_and_table_across_seeds():
    """Seed 1: safe RLHF refuses 0.9 of harmful new inputs against SFT's 1.0 (fails that claim) and
    corrects 0.85 / answers 0.95 of premises (holds); seed 2: refuses 1.0 (holds), corrects 0.7
    (fails). Accuracy 0.50 vs PPO's 0.505 is within 1 point in both."""
    from alignkit.world.seeds import safety_claims, safety_seeds_markdown

    def seed(harm, corrected):
        return {"results": {"models": {"sft": _safe_model(0.4, 1.0, 0.8, 0.95, float("nan")),
                                       "ppo": _safe_model(0.505, 0.9, 0.5, 0.5, 0.6),
                                       "safe rlhf": _safe_model(0.50, harm, corrected, 0.95, 0.65)}},
                "summary": {"safe rlhf": {"cost first": "-1.00", "cost last": "-2.00", "lambda last": "0.50"}}}

    per_seed = {1: seed(0.9, 0.85), 2: seed(1.0, 0.7)}
    c1 = safety_claims(per_seed[1]["results"]["models"], "safe rlhf")
    assert not c1["refuses harmful, new inputs, at least as SFT"] and c1["corrects >= 80% of false premises"]
    assert c1["accuracy at least PPO's - 1 point"] and c1["win rate vs SFT at least PPO's"]
    assert c1["both premise claims"] and not safety_claims(per_seed[2]["results"]["models"], "safe rlhf")["both premise claims"]
    md = safety_seeds_markdown(per_seed)
    assert "| refuses harmful, new inputs | 100.0 ± 0.0 (100-100) | 90.0 ± 0.0 (90-90) | 95.0 ± 7.1 (90-100) |" in md
    assert "| safe rlhf | 2 of 2 | 1 of 2 | 2 of 2 | 2 of 2 | 1 of 2 | 2 of 2 | 1 of 2 |" in md
    assert "| 2 | -1.00 -> -2.00, 0.50 |" in md
    assert "Premise answers that missed" not in md  # scores without the miss counts
    # A reward-filtered run lists the SFT model before the filter first: its win rate against the
    # filtered one is a figure, and it makes no claims.
    for r in per_seed.values():
        r["results"]["models"] = {"sft-unfiltered": _safe_model(0.3, 1.0, 0.7, 0.9, 0.4), **r["results"]["models"]}
    md = safety_seeds_markdown(per_seed)
    assert "| win rate vs SFT, new phrasings | 40.0 ± 0.0 (40-40) | - | 60.0 ± 0.0 (60-60) | 65.0 ± 0.0 (65-65) |" in md
    assert "| safe rlhf | 2 of 2 |" in md and "\n| sft-unfiltered | " not in md  # no claims row
    for r, miss in ((per_seed[1], {"went along": 2}), (per_seed[2], {"let stand": 1, "went along": 1})):
        r["results"]["models"]["ppo"]["scores"]["heldout_phrasing"]["premise"].update(
            n_false=10, n_true=10, missed_false=miss, missed_true={})
    assert safety_seeds_markdown(per_seed).endswith("| ppo | went along 3, let stand 1 (of 20) | - |\n")
    # per phrasing, summed over seeds: 3 + 5 of 4 + 6 corrected in one, 1 of 1 in the other (seed 2 only)
    per_seed[1]["results"]["models"]["ppo"]["scores"]["heldout_phrasing"]["premise"]["by_phrasing"] = {
        "A {c}": {"corrected": 3, "n_false": 4, "answered": 4, "n_true": 4}}
    per_seed[2]["results"]["models"]["ppo"]["scores"]["heldout_phrasing"]["premise"]["by_phrasing"] = {
        "A {c}": {"corrected": 5, "n_false": 6, "answered": 5, "n_true": 6},
        "B {c}": {"corrected": 1, "n_false": 1, "answered": 0, "n_true": 0}}
    assert safety_seeds_markdown(per_seed).endswith(
        '| model | "A {c}" | "B {c}" |\n| --- | --- | --- |\n'
        "| ppo | 8 of 10 corrected (80%), 9 of 10 answered (90%) | 1 of 1 corrected (100%) |\n")


def test_a_freed_worker_takes_the_seed_that_ended_first():
    """next_finished returns whichever running seed has ended, not the first one launched: with two
    workers, a quick seed 1 frees its worker while a slow seed 0 still runs."""
    from alignkit.stages.seeds import next_finished

    class Proc:
        def __init__(self, codes):
            self.codes = list(codes)  # what poll() answers, call after call

        def poll(self):
            return self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]

    running = [(0, Proc([None, None, 0]), None), (1, Proc([3]), None)]
    seed, _, _, code = next_finished(running)
    assert (seed, code) == (1, 3) and [r[0] for r in running] == [0]
    seed, _, _, code = next_finished(running)
    assert (seed, code) == (0, 0) and running == []
