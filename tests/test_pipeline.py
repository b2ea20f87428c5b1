"""The demo pipeline on a reduced world: SFT moves every axis the right way; a rerun reuses work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.cli import main
from alignkit.config import PipelineConfig, load_config
from alignkit.stages.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["world.sft_examples=600", "world.eval_prompts=60", "world.ranking_prompts=30", "world.rl_prompts=30",
           "pretrain.corpus.documents=600", "pretrain.model.hidden=64", "pretrain.train.max_steps=40",
           "sft.train.max_steps=60", "sft.checkpoint.save_every=0", "pretrain.log.progress=false",
           "sft.log.progress=false", "eval.max_new_tokens=12", "rm.train.max_steps=30", "rm.train.batch_size=16",
           "rm.normalize.samples=16", "rm.normalize.max_new_tokens=8", "rm.log.progress=false",
           "ppo.train.max_steps=2", "ppo.train.batch_size=16", "ppo.train.eval_every=1", "ppo.rollout.max_new_tokens=8",
           "ppo.rollout.eval_samples=16", "ppo.log.progress=false", "dpo.train.max_steps=3", "dpo.train.batch_size=8",
           "dpo.train.eval_every=0", "dpo.log.progress=false"]
FULL = ["stages=[pretrain,sft,rm,ppo,grpo,rounds,dpo,best-of-n,distill,eval]", "grpo_runs=[grpo,rloo-rm]",
        "grpo.train.max_steps=2", "grpo.train.batch_size=4", "grpo.group.n=4", "grpo.rollout.max_new_tokens=8",
        "grpo.train.eval_every=1", "grpo.rollout.eval_samples=16", "grpo.log.progress=false", "grpo.keep_best=true", "rounds.rounds=1", "rounds.prompts=12",
        "rounds.k=3", "rounds.rm_steps=3", "rounds.ppo_steps=1", "rounds.max_new_tokens=8", "rm_ensemble=2", "best_of_n.n=2", "best_of_n.sampling.max_new_tokens=8",
        "rft.train.max_steps=3", "rft.log.progress=false", "student.hidden=32", "student.layers=1",
        "distill.train.max_steps=3", "distill.train.batch_size=8", "distill.sampling.max_new_tokens=8",
        "distill.log.progress=false", "eval.also_vs=[sft,student-sft]"]


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(PipelineConfig, ROOT / "configs" / "demo-full.yaml",
                      [f"run_dir={root / 'run'}", f"cache_dir={root / 'cache'}", *REDUCED, *FULL])
    return run_pipeline(cfg)


def test_sft_improves_every_axis_over_the_base(reduced_run):
    results = json.loads((reduced_run / "results.json").read_text())
    base = results["models"]["base"]["scores"]["heldout_phrasing"]
    sft = results["models"]["sft"]["scores"]["heldout_phrasing"]
    assert base["accuracy"] < 0.05  # the base model does not follow instructions
    assert sft["accuracy"] > base["accuracy"]
    assert sft["refusal_rate"] > base["refusal_rate"]
    assert results["models"]["sft"]["perplexity"] < results["models"]["base"]["perplexity"]
    win = results["models"]["sft"]["win_rate_vs_base"]["heldout_phrasing"]
    assert win["wins"] > win["losses"]
    assert "| sft |" in (reduced_run / "results.md").read_text()
    rm = results["reward_model"]
    assert rm["accuracy"] > 0.5 and rm["by_kind"]["safety"] > 0.5  # better than chance already
    assert {"correctness", "relevance", "safety", "style"} == set(rm["by_kind"])
    norm = json.loads((reduced_run / "rm" / "model" / "reward_normalization.json").read_text())
    assert norm["normalized_on"]["n"] == 16


def test_ppo_joins_the_table_with_a_win_rate_against_sft(reduced_run):
    """The reduced PPO stage (2 iterations) runs from the SFT model and the reward model, keeps its
    best policy by held-out reward on training-split prompts, and the table compares it with SFT."""
    results = json.loads((reduced_run / "results.json").read_text())
    assert list(results["models"]) == ["base", "sft", "sft+filter", "ppo", "grpo", "rloo-rm", "ppo-rounds", "dpo",
                                       "best-of-n", "student-sft", "student-distill"]
    assert results["models"]["ppo"]["path"].endswith("ppo/best")
    assert "heldout_phrasing" in results["models"]["ppo"]["win_rate_vs_sft"]
    assert "win_rate_vs_sft" not in results["models"]["sft"]
    assert "win rate vs sft" in (reduced_run / "results.md").read_text()
    rows = [json.loads(line) for line in (reduced_run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and all("eval_reward" in r for r in rows)


def test_critic_free_runs_join_the_table(reduced_run):
    """grpo_runs=[grpo, rloo-rm]: GRPO rewarded by the world's verifier (the grpo section's rewards)
    and RLOO by the reward model, each from the SFT model under grpo/NAME, its best policy kept,
    summarised in results.md."""
    results = json.loads((reduced_run / "results.json").read_text())
    for name in ("grpo", "rloo-rm"):
        assert results["models"][name]["path"].endswith(f"grpo/{name}/best")
        assert results["grpo"][name]["steps"] == 2
    verifier = [json.loads(line) for line in (reduced_run / "grpo" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    with_rm = [json.loads(line) for line in (reduced_run / "grpo" / "rloo-rm" / "metrics.jsonl").read_text().splitlines()]
    assert "reward/world_check" in verifier[1] and "reward/reward_model" in with_rm[1]
    assert "rloo-rm: 2 steps" in (reduced_run / "results.md").read_text()


def test_rerun_reuses_the_cached_base_and_finished_sft(reduced_run, capsys):
    before = (reduced_run / "sft" / "model" / "model.safetensors").stat().st_mtime
    cache = reduced_run.parent / "cache"
    assert main(["pipeline", str(ROOT / "configs" / "demo-full.yaml"), f"run_dir={reduced_run}", f"cache_dir={cache}",
                 *REDUCED, *FULL, "stages=[pretrain,sft,rm]"]) == 0
    err = capsys.readouterr().err
    assert "pretrain cached" in err and err.count("nothing to resume") == 4  # base, SFT, RM and its ensemble member
    assert (reduced_run / "sft" / "model" / "model.safetensors").stat().st_mtime == before


def test_unknown_stage_is_named(tmp_path):
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown stage 'sfr' in stages .*did you mean 'sft'"):
        load_config(PipelineConfig, None, ["stages=[pretrain,sfr]"])


def test_world_data_command_writes_every_set(tmp_path, capsys):
    assert main(["world", "data", str(tmp_path / "w"), "sft_examples=50", "ranking_prompts=20", "rl_prompts=20",
                 "eval_prompts=20"]) == 0
    names = {p.name for p in (tmp_path / "w").iterdir()}
    assert names == {"sft.jsonl", "rankings.jsonl", "rl_prompts.jsonl", "rl_eval_prompts.jsonl", "eval_heldout_phrasing.jsonl",
                     "eval_heldout_input.jsonl", "cost.jsonl", "manifest.json"}
    ranking = json.loads((tmp_path / "w" / "rankings.jsonl").read_text().splitlines()[0])
    assert len(ranking["responses"]) == 4 and len(ranking["kinds"]) == 4


def test_a_larger_held_out_sample_changes_only_the_evaluation_files(tmp_path):
    """world.heldout_prompts sizes the two held-out splits alone: every training set is byte for byte
    the one written without it."""
    small = ["sft_examples=50", "ranking_prompts=20", "rl_prompts=20", "eval_prompts=20"]
    assert main(["world", "data", str(tmp_path / "a"), *small]) == 0
    assert main(["world", "data", str(tmp_path / "b"), *small, "heldout_prompts=60"]) == 0
    for name in ("sft", "rankings", "rl_prompts", "rl_eval_prompts", "cost"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    for split in ("heldout_phrasing", "heldout_input"):
        rows = lambda d: len((tmp_path / d / f"eval_{split}.jsonl").read_text().splitlines())  # noqa: E731
        assert rows("a") <= 20 and 40 < rows("b") <= 60


def test_a_larger_held_out_sample_reuses_every_finished_stage(reduced_run, capsys):
    """Evaluating a finished run again on a larger sample retrains nothing: heldout_prompts is left out
    of what each stage records (reuse.EVAL_ONLY_WORLD), unlike any other world setting (next test)."""
    import shutil

    world, keep = reduced_run / "world", reduced_run.parent / "world-before"
    shutil.copytree(world, keep)
    before = (reduced_run / "sft" / "model" / "model.safetensors").stat().st_mtime
    try:
        assert main(["pipeline", str(ROOT / "configs" / "demo-full.yaml"), f"run_dir={reduced_run}",
                     f"cache_dir={reduced_run.parent / 'cache'}", *REDUCED, *FULL, "stages=[pretrain,sft,rm]",
                     "world.heldout_prompts=90"]) == 0
        assert capsys.readouterr().err.count("nothing to resume") == 4
        assert len((world / "eval_heldout_phrasing.jsonl").read_text().splitlines()) > 60
        assert (reduced_run / "sft" / "model" / "model.safetensors").stat().st_mtime == before
    finally:  # the later tests read this run's world as the fixture wrote it
        shutil.rmtree(world)
        shutil.copytree(keep, world)


def test_a_changed_world_does_not_reuse_finished_stages(reduced_run, capsys):
    """A rerun skips finished stages, so it must not skip them when their inputs changed: the run
    directory's SFT model was made from another world, and the pipeline says so."""
    cache = reduced_run.parent / "cache"
    code = main(["pipeline", str(ROOT / "configs" / "demo.yaml"), f"run_dir={reduced_run}", f"cache_dir={cache}",
                 *REDUCED, "world.sloppy_share=0.05"])
    assert code == 2
    assert "holds a sft stage made with other world settings" in capsys.readouterr().err


def test_dpo_and_the_filtered_sft_model_join_the_table(reduced_run):
    """DPO runs from the SFT model on the same rankings; "sft+filter" is SFT behind the rule-based
    filter, which refuses every held-out harmful request (the rules catch them before the model)."""
    results = json.loads((reduced_run / "results.json").read_text())
    assert results["models"]["dpo"]["path"].endswith("dpo/model")
    assert "heldout_input" in results["models"]["dpo"]["win_rate_vs_sft"]
    filtered = results["models"]["sft+filter"]
    assert filtered["path"] == results["models"]["sft"]["path"]
    for split in ("heldout_phrasing", "heldout_input"):
        assert filtered["scores"][split]["refusal_rate"] == 1.0
        assert filtered["scores"][split]["over_refusal_rate"] <= results["models"]["sft"]["scores"][split]["over_refusal_rate"]
    assert "| sft+filter |" in (reduced_run / "results.md").read_text()
    rows = [json.loads(line) for line in (reduced_run / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [3]  # log.every 10: the last step is always logged


def test_best_of_n_and_distillation_join_the_table(reduced_run):
    """The full demo's extra stages: best-of-n data and the SFT model fine-tuned on it; a smaller
    student (its own base and SFT) distilled from DPO, compared with its SFT baseline."""
    results = json.loads((reduced_run / "results.json").read_text())
    assert results["models"]["best-of-n"]["path"].endswith("best-of-n/sft/model")
    report = json.loads((reduced_run / "best-of-n" / "report.json").read_text())
    assert report["n"] == 2 and report["prompts"] == len((reduced_run / "world" / "rl_prompts.jsonl").read_text().splitlines())
    d = results["distill"]
    assert d["teacher"] == "dpo" and d["student_params"] < d["teacher_params"] / 2
    assert "win_rate_vs_student-sft" in results["models"]["student-distill"]
    assert "Distillation: the student" in (reduced_run / "results.md").read_text()


def test_a_stage_left_out_of_a_run_is_still_checked_when_it_comes_back(reduced_run, capsys):
    """Each stage directory records its own inputs: a run without dpo (and a changed dpo.beta) does not
    hide the stale DPO model from the next run that lists dpo again."""
    cache = reduced_run.parent / "cache"
    args = ["pipeline", str(ROOT / "configs" / "demo-full.yaml"), f"run_dir={reduced_run}", f"cache_dir={cache}",
            *REDUCED, *FULL]
    assert main([*args, "stages=[pretrain,sft]", "dpo.beta=0.5"]) == 0
    capsys.readouterr()
    assert main([*args, "dpo.beta=0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds a dpo stage made with other dpo settings" in err and "dpo/pipeline_inputs.yaml" in err


def test_the_report_is_one_self_contained_page_with_every_model(reduced_run):
    """report.html parses, embeds its images (nothing fetched), and its table names every model."""
    from html.parser import HTMLParser

    results = json.loads((reduced_run / "results.json").read_text())
    page = (reduced_run / "report.html").read_text()

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cells, self.images, self.external, self.open_tags = [], [], [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs.get("src", ""))
            if any(v and v.startswith(("http://", "https://", "//")) for k, v in attrs.items() if k in ("src", "href")):
                self.external.append(attrs)
            if tag in ("table", "tr", "td", "th"):
                self.open_tags.append(tag)

        def handle_endtag(self, tag):
            if tag in ("table", "tr", "td", "th"):
                assert self.open_tags and self.open_tags.pop() == tag, f"unbalanced </{tag}>"

        def handle_data(self, data):
            self.cells.append(data.strip())

    parsed = Page()
    parsed.feed(page)
    assert not parsed.open_tags and not parsed.external
    assert len(parsed.images) >= 3 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    for name in results["models"]:
        assert name in parsed.cells, name
    assert (reduced_run / "report_axes.png").exists()


def test_a_ranking_round_adds_the_policys_own_rated_samples(reduced_run):
    """Round 1: the PPO policy samples 3 different responses to 12 RL prompts; the annotator rates them
    (equal grades tie); every rated response is one of the policy's own samples, and the reward model
    continues on the world's rankings plus exactly the ordered pairs of distinct ratings; PPO continues
    from the PPO policy with the SFT model as its KL reference."""
    import yaml

    from alignkit.stages.rounds import draw_prompts, sample_round

    results = json.loads((reduced_run / "results.json").read_text())
    round_dir = reduced_run / "rounds" / "round-1"
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]  # noqa: E731
    samples, rated = read(round_dir / "samples.jsonl"), read(round_dir / "rankings.jsonl")
    ppo_policy = results["models"]["ppo"]["path"]
    rl_rows = read(reduced_run / "world" / "rl_prompts.jsonl")
    again, _ = sample_round(ppo_policy, draw_prompts(rl_rows, 12, 0, 1), 3, 1.0, 8, 1)
    assert again == samples and 0 < len(rated) <= len(samples) <= 12  # the PPO policy's samples, reproduced
    own = {row["prompt"]: row["responses"] for row in samples}
    assert all(row["responses"] == own[row["prompt"]] and len(set(row["scores"])) > 1 for row in rated)
    pairs = sum(a > b for row in rated for a in row["scores"] for b in row["scores"])
    record = results["rounds"][0]
    assert record["pairs_added"] == pairs and record["rated_prompts"] == len(rated)
    assert 0.0 <= record["rm_accuracy_on_new_samples_before"] <= 1.0
    world_rows = read(reduced_run / "world" / "rankings.jsonl")
    report = json.loads((round_dir / "rm" / "data_report.json").read_text())
    assert report["train"]["rows_read"] == len(world_rows) + len(rated)
    assert report["train"]["kept"] + report["eval"]["kept"] == 6 * len(world_rows) + pairs  # 4 candidates: 6 pairs
    ppo_cfg = yaml.safe_load((round_dir / "ppo" / "config.yaml").read_text())
    assert ppo_cfg["model"]["path"] == ppo_policy and ppo_cfg["reward_model"] == str(round_dir / "rm" / "model")
    assert ppo_cfg["reference_model"] == results["models"]["sft"]["path"] and ppo_cfg["train"]["max_steps"] == 1
    assert results["models"]["ppo-rounds"]["path"].startswith(str(round_dir / "ppo"))
    assert "reward_model_rounds" in results and "Ranking rounds" in (reduced_run / "results.md").read_text()


def test_a_stage_recorded_before_a_new_config_key_existed_is_still_reused(reduced_run, capsys):
    """A newer alignkit adds keys (world.correctness_prompts); a stage recorded without one was built
    with its default, so a rerun with the default reuses it, and one with another value does not."""
    import yaml

    recorded = reduced_run / "sft" / "pipeline_inputs.yaml"
    inputs = yaml.safe_load(recorded.read_text())
    del inputs["world"]["correctness_prompts"]
    recorded.write_text(yaml.safe_dump(inputs, sort_keys=False))
    cache = reduced_run.parent / "cache"
    args = ["pipeline", str(ROOT / "configs" / "demo-full.yaml"), f"run_dir={reduced_run}", f"cache_dir={cache}",
            *REDUCED, *FULL, "stages=[pretrain,sft]"]
    capsys.readouterr()
    assert main(args) == 0 and "nothing to resume" in capsys.readouterr().err
    assert main([*args, "world.correctness_prompts=5"]) == 2
    assert "holds a sft stage made with other world settings" in capsys.readouterr().err


def test_an_ensemble_of_reward_models_drives_ppo(reduced_run):
    """rm_ensemble=2: a second reward model (seed + 1) beside rm/, PPO's reward from both (mean minus
    the spread), and the ensemble judged like the single model."""
    import yaml

    member = reduced_run / "rm-ensemble" / "member-1"
    assert yaml.safe_load((member / "config.yaml").read_text())["seed"] == 1
    ppo_cfg = yaml.safe_load((reduced_run / "ppo" / "config.yaml").read_text())
    assert ppo_cfg["reward_model"] == str(reduced_run / "rm" / "model")
    assert ppo_cfg["reward_ensemble"] == [str(member / "model")]
    results = json.loads((reduced_run / "results.json").read_text())
    assert set(results["reward_model_ensemble"]["by_kind"]) == set(results["reward_model"]["by_kind"])


def test_without_pretraining_the_given_model_is_the_base_row(tiny_dir, tmp_path):
    """stages [sft, eval] from a model of one's own (as a real pretrained model would be): the table
    has it as `base`, the model before SFT."""
    cfg = load_config(PipelineConfig, None, [f"run_dir={tmp_path / 'run'}", "stages=[sft,eval]", f"sft.model.path={tiny_dir}",
                                             *REDUCED, "sft.train.max_steps=5"])
    results = json.loads((run_pipeline(cfg) / "results.json").read_text())
    assert list(results["models"])[:2] == ["base", "sft"]
    assert results["models"]["base"]["path"] == str(tiny_dir)


def beside(reduced_run: Path, name: str, *overrides: str) -> tuple[Path, list[str]]:
    """A run directory next to the reduced run (sharing its base cache) and the `alignkit pipeline`
    arguments for the reduced world there with `overrides`."""
    run = reduced_run.parent / name
    return run, ["pipeline", str(ROOT / "configs" / "demo-full.yaml"), f"run_dir={run}",
                 f"cache_dir={reduced_run.parent / 'cache'}", *REDUCED, *overrides]


def test_sft_filter_retrains_on_the_demonstrations_the_reward_model_keeps_and_hands_that_model_on(reduced_run, capsys):
    """stages with sft-filter: a second SFT from the base on the demonstrations scoring at least the
    floor (kept and dropped rows written with their scores), PPO starts from it, the table lists both
    SFT models, and a later run without the stage does not reuse that PPO."""
    import yaml

    from alignkit.stages.pipeline import handed_on_sft

    run, args = beside(reduced_run, "filtered", "stages=[pretrain,sft,rm,sft-filter,ppo,eval]", "sft_filter_min_score=0.0")
    assert main(args) == 0
    kept = (run / "sft-filtered" / "filter_kept.jsonl").read_text().splitlines()
    dropped = (run / "sft-filtered" / "filter_dropped.jsonl").read_text().splitlines()
    report = json.loads((run / "sft-filtered" / "data_report.json").read_text())
    assert report["train"]["dropped"]["reward model score below 0"] == len(dropped) > 0 and kept
    assert all(json.loads(r)["score"] < 0 for r in dropped) and all(json.loads(r)["score"] >= 0 for r in kept)
    assert yaml.safe_load((run / "ppo" / "config.yaml").read_text())["model"]["path"] == str(run / "sft-filtered" / "model")
    assert handed_on_sft(run) == run / "sft-filtered" / "model" and handed_on_sft(reduced_run) == reduced_run / "sft" / "model"
    models = json.loads((run / "results.json").read_text())["models"]
    assert models["sft-unfiltered"]["path"] == str(run / "sft" / "model")
    assert models["sft"]["path"] == str(run / "sft-filtered" / "model")
    capsys.readouterr()
    assert main([*args, "stages=[pretrain,sft,rm,ppo]"]) == 2
    assert "holds a ppo stage made with other sft_filter settings" in capsys.readouterr().err


def test_sft_filter_needs_a_reward_model():
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="sft-filter stage scores the demonstrations with this run.s cost or reward "
                       "model; add cost or rm to stages .or give sft_filter_model."):
        load_config(PipelineConfig, None, ["stages=[pretrain,sft,sft-filter]"])


def test_the_cost_stage_trains_on_its_categories_and_scores_the_filter(reduced_run, capsys):
    """stages with cost and sft-filter: a cost model from the SFT model on the cost rows of the chosen
    categories only (their own copy beside it), the filter scores with it (a drop is a cost above the
    floor), eval reports its held-out accuracy per category; a rerun with other cost settings stops."""
    import yaml

    run, args = beside(reduced_run, "costed", "stages=[pretrain,sft,rm,cost,sft-filter,eval]", "cost_categories=[harm]",
                       "cost.train.max_steps=20", "cost.train.batch_size=16", "cost.train.eval_every=20",
                       "cost.log.progress=false")
    assert main(args) == 0
    rows = [json.loads(line) for line in (run / "cost" / "rows.jsonl").read_text().splitlines()]
    everything = [json.loads(line) for line in (run / "world" / "cost.jsonl").read_text().splitlines()]
    assert rows == [r for r in everything if r["category"] == "harm"] and len(rows) < len(everything)
    cost_cfg = yaml.safe_load((run / "cost" / "config.yaml").read_text())
    assert cost_cfg["objective"] == "cost" and cost_cfg["model"]["path"] == str(run / "sft" / "model")
    filtered = yaml.safe_load((run / "sft-filtered" / "config.yaml").read_text())
    assert filtered["data"]["filter_model"] == str(run / "cost" / "model")
    dropped = (run / "sft-filtered" / "filter_dropped.jsonl").read_text().splitlines()
    report = json.loads((run / "sft-filtered" / "data_report.json").read_text())
    assert report["train"]["dropped"].get("cost model's cost above 0", 0) == len(dropped)
    results = json.loads((run / "results.json").read_text())
    assert set(results["cost_model"]) >= {"eval_accuracy", "eval_accuracy/category:harm", "eval_unsafe_recall"}
    assert "Cost model, held-out rows: safe/unsafe right" in (run / "results.md").read_text()
    capsys.readouterr()
    assert main([*args, "cost.train.max_steps=21"]) == 2
    assert "holds a cost stage made with other cost settings" in capsys.readouterr().err


def test_cost_categories_are_those_of_the_world():
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="cost_categories: 'false_premise' is not a category of this world's cost "
                       "rows .skills, harm: skills and world.safety_families."):
        load_config(PipelineConfig, None, ["cost_categories=[false_premise]"])
    with pytest.raises(ConfigError, match="did you mean 'discrimination'"):
        load_config(PipelineConfig, None, ["world.safety_families=[harm,discrimination]", "cost_categories=[discrimnation]"])


def test_the_stage_table_and_the_reuse_table_agree():
    """STEPS runs the known stages in their documented order, and every directory reuse.WRITES
    records belongs to one of them."""
    from alignkit.config import KNOWN_STAGES
    from alignkit.stages.pipeline import STEPS
    from alignkit.stages.reuse import WRITES

    assert [step.name for step in STEPS] == list(KNOWN_STAGES)
    assert {stage for stage, _ in WRITES.values()} <= set(KNOWN_STAGES)
