"""The `alignkit` command: one table from command name to the function it runs.

Stage commands take an optional YAML config and key=value overrides:
    alignkit sft configs/sft/tiny.yaml optim.lr=1e-4 train.max_steps=200
`alignkit sft --help` lists every key with its type, default and meaning.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from alignkit import config as C  # dataclasses and the YAML loader only: cheap to import
from alignkit import recipes
from alignkit.errors import AlignkitError
from alignkit.recipes import config_path


# The function behind each stage command. Each imports its stage when it runs, so `alignkit --help`
# and the plain commands do not pay for torch and transformers (2.7 s on our machines).
def run_pretrain(cfg: Any) -> Any:
    from alignkit.stages.pretrain import run_pretrain
    return run_pretrain(cfg)


def run_sft(cfg: Any) -> Any:
    from alignkit.stages.sft import run_sft
    return run_sft(cfg)


def run_pipeline(cfg: Any) -> Any:
    from alignkit.stages.pipeline import run_pipeline
    return run_pipeline(cfg)


def run_rm(cfg: Any) -> Any:
    from alignkit.stages.rm import run_rm
    return run_rm(cfg)


def run_ppo(cfg: Any) -> Any:
    from alignkit.stages.ppo import run_ppo
    return run_ppo(cfg)


def run_grpo(cfg: Any) -> Any:
    from alignkit.stages.grpo import run_grpo
    return run_grpo(cfg)


def run_dpo(cfg: Any) -> Any:
    from alignkit.stages.dpo import run_dpo
    return run_dpo(cfg)


def run_distill(cfg: Any) -> Any:
    from alignkit.stages.distill import run_distill
    return run_distill(cfg)


def run_best_of_n(cfg: Any) -> Any:
    from alignkit.stages.best_of_n import run_best_of_n
    return run_best_of_n(cfg)


def run_eval(cfg: Any) -> Any:
    from alignkit.stages.evaluate import run_eval
    return run_eval(cfg)


def _stage_command(name: str, config_cls: type, run: Callable[[Any], Any]) -> Callable[[list[str]], int]:
    """A stage command: an optional YAML file and key=value overrides into `config_cls`, then `run`."""
    def command(argv: list[str]) -> int:
        if any(a in ("-h", "--help") for a in argv):
            print(f"usage: alignkit {name} [CONFIG.yaml] [key=value ...]\n\n{(config_cls.__doc__ or '').strip()}\n\nkeys:")
            for key, tp, default, doc in C.describe(config_cls):
                print(f"  {key} ({tp}, default {default})\n      {doc}")
            return 0
        path = config_path(argv[0]) if argv and "=" not in argv[0] else None
        overrides = argv[1:] if path else argv
        run(C.load_config(config_cls, path, overrides))
        return 0

    return command


def cmd_merge(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="alignkit merge", description="Merge a LoRA adapter into its base model.")
    p.add_argument("adapter_dir")
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    from alignkit.models import merge_adapter
    from alignkit.training.run import quiet_libraries

    quiet_libraries()
    print(merge_adapter(args.adapter_dir, args.out_dir))
    return 0


def cmd_convert(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="alignkit convert",
                                description="Write any loadable model (HF directory, .gguf file, LoRA adapter) as a plain "
                                            "safetensors Hugging Face directory.")
    p.add_argument("src", help="a model directory, a .gguf file, or a LoRA adapter directory")
    p.add_argument("out_dir")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args(argv)
    from alignkit.models.adapters import convert_model
    from alignkit.training.run import quiet_libraries

    quiet_libraries()
    print(convert_model(args.src, args.out_dir, args.dtype))
    return 0


def cmd_chat(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="alignkit chat", description="Talk to a model in the terminal (chat template applied).")
    p.add_argument("model_dir")
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--filter", nargs="?", const="default", metavar="RULES.yaml",
                   help="screen requests and replies with the rule-based safety filter (the shipped rules, or RULES.yaml)")
    p.add_argument("--filter-classifier", metavar="MODEL",
                   help="add a learned layer to the filter: a harm classifier (e.g. `alignkit rm objective=cost`), "
                        "blocking what it scores above 0 as well as what the rules block (implies --filter)")
    args = p.parse_args(argv)
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses
    from alignkit.training.run import quiet_libraries

    quiet_libraries()
    tokenizer, model = load_tokenizer(args.model_dir), load_causal_lm(args.model_dir)
    safety = None
    if args.filter or args.filter_classifier:
        from alignkit.safety import load_filter

        safety = load_filter(None if args.filter in (None, "default") else args.filter, args.filter_classifier)
    history = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            history = history[:1] if args.system else []
            continue
        history.append({"role": "user", "content": line})
        generate = lambda chats: generate_responses(model, tokenizer, chats, args.max_new_tokens,  # noqa: E731
                                                    args.temperature, args.top_p)
        if safety is None:
            (reply,) = generate([history])
        else:
            from alignkit.safety import filtered_responses

            screened = filtered_responses([history], generate, safety)
            reply, verdict = screened.responses[0], screened.verdicts[0]
            if verdict.blocked:
                print(f"[filter: {verdict.reason}]", file=sys.stderr, flush=True)
        history.append({"role": "assistant", "content": reply})
        print(f"model> {reply}" if interactive else reply, flush=True)


def cmd_serve(argv: list[str]) -> int:
    from alignkit.serve import cmd_serve as serve  # starlette and uvicorn load only here

    return serve(argv)


def cmd_tiny_model(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="alignkit tiny-model", description="Build a tiny random model with a local BPE tokenizer.")
    p.add_argument("out_dir")
    p.add_argument("--arch", default="llama", choices=["llama", "qwen2", "gemma", "gpt2"])
    p.add_argument("--corpus", help="text file to train the tokenizer on (one document per line)")
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args(argv)
    from alignkit.models import build_tiny_model
    from alignkit.training.run import quiet_libraries

    quiet_libraries()
    corpus = open(args.corpus, encoding="utf-8").read().splitlines() if args.corpus else None
    build_tiny_model(args.out_dir, corpus, args.arch, args.vocab_size, args.hidden, args.layers, args.heads)
    print(args.out_dir)
    return 0


def cmd_plot(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="alignkit plot", description="Draw a run's metrics.jsonl as PNG curves.")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.add_argument("--keys", help="comma-separated metrics to draw (default: all), e.g. reward,kl,eval_reward")
    p.add_argument("--title", default="", help="figure title (default: the run directory)")
    args = p.parse_args(argv)
    from pathlib import Path

    from alignkit.errors import AlignkitError
    from alignkit.training.plots import plot_metrics

    path = Path(args.run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise AlignkitError(f"{path} does not exist: is {args.run_dir} a run directory?")
    print(plot_metrics(path, args.out, title=args.title, keys=args.keys.split(",") if args.keys else None))
    return 0


def run_self_instruct(cfg: Any) -> Any:
    from alignkit.stages.self_instruct import report_lines, run_self_instruct
    from alignkit.training.run import quiet_libraries

    quiet_libraries()
    report = run_self_instruct(cfg)
    for line in report_lines(report):
        print(line)
    print(f"{cfg.output_dir}: data.jsonl, instructions.jsonl, candidates.jsonl (every proposal, kept or why not), report.json")
    return report


def cmd_data(argv: list[str]) -> int:
    if argv and argv[0] == "self-instruct":
        from alignkit.config.data import SelfInstructConfig

        return _stage_command("data self-instruct", SelfInstructConfig, run_self_instruct)(argv[1:])
    p = argparse.ArgumentParser(prog="alignkit data", description="Collect rankings from people (or the demo world's "
                                "annotator), filter training rows, report on a data set; `alignkit data self-instruct "
                                "--help` for generating instruction data.")
    sub = p.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("sample", help="a model writes k different responses per prompt")
    s.add_argument("model_dir")
    s.add_argument("prompts", help='rows with a "prompt" field (e.g. the world\'s rl_prompts.jsonl)')
    s.add_argument("out", help="JSONL of {prompt, responses}")
    s.add_argument("--k", type=int, default=4)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--limit", type=int, default=0, help="use only the first N prompts")
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export-ranking", help="a blinded, shuffled sheet (CSV + HTML) for people to rank")
    e.add_argument("samples")
    e.add_argument("out_dir")
    e.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("import-ranking", help="read a filled sheet back as ranked preference data")
    i.add_argument("sheet_csv")
    i.add_argument("key_json")
    i.add_argument("out")
    f = sub.add_parser("filter", help="drop unsafe or low-quality training rows (rule-based), with counts by reason")
    f.add_argument("data", help="any data file SFT reads (.jsonl, .json, .parquet, a saved dataset)")
    f.add_argument("out", help="JSONL of the kept rows, unchanged")
    f.add_argument("--rules", help="safety rules YAML (default: the shipped rules)")
    f.add_argument("--report", help="also write every drop (where, reason) to this JSON file")
    f.add_argument("--near-duplicates", type=float, default=0.0, metavar="JACCARD",
                   help="drop later rows whose word-shingle Jaccard similarity to a kept row is at least this "
                        "(MinHash; e.g. 0.8; default off)")
    f.add_argument("--min-response-words", type=int, default=0, help="drop rows whose responses have fewer words")
    f.add_argument("--max-words", type=int, default=0, help="drop rows with more words than this (all turns)")
    f.add_argument("--max-tokens", type=int, default=0, help="drop rows with more tokens than this (needs --tokenizer)")
    f.add_argument("--tokenizer", help="a model directory or hub id whose tokenizer counts tokens")
    r = sub.add_parser("report", help="one page on a data set before training: sizes, lengths, diversity, "
                                      "duplicates, flagged rows, preference biases (HTML + JSON)")
    r.add_argument("data", help="SFT or preference data in any file type the stages read")
    r.add_argument("--out", help="directory for report.html, report.json and the PNGs (default: DATA's name + "
                                 "'-report' beside it)")
    r.add_argument("--tokenizer", help="a model directory or hub id: lengths in its tokens")
    r.add_argument("--max-length", type=int, default=0, help="with --tokenizer: count rows longer than this")
    r.add_argument("--group", default="source", help="the field to count rows by (default: source)")
    r.add_argument("--near-duplicates", type=float, default=0.8, metavar="JACCARD",
                   help="Jaccard similarity at which two rows are near-duplicates (default 0.8)")
    r.add_argument("--rules", help="safety rules YAML (default: the shipped rules; 'none' skips the safety check)")
    args = p.parse_args(argv)
    import json

    if args.verb in ("filter", "report") and (args.tokenizer or "").strip():
        from alignkit.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    else:
        tokenizer = None
    if args.verb == "report":
        from pathlib import Path

        from alignkit.data.survey import analyse, summary_lines
        from alignkit.data.survey_page import write_survey
        from alignkit.safety import load_filter

        rules = None if args.rules == "none" else load_filter(args.rules)
        report = analyse(args.data, tokenizer, args.max_length, args.group, args.near_duplicates, rules)
        data = Path(str(args.data).rstrip("/"))
        out = Path(args.out) if args.out else data.parent / f"{data.stem}-report"
        paths = write_survey(report, out)
        for line in summary_lines(report):
            print(line)
        print(f"{paths['html']}, {paths['json']}")
        return 0
    if args.verb == "filter":
        from alignkit.errors import ConfigError
        from alignkit.safety.data_filter import filter_file

        if args.max_tokens and tokenizer is None:
            raise ConfigError("--max-tokens needs --tokenizer (a model directory or hub id)")
        report = filter_file(args.data, args.out, args.rules, near_threshold=args.near_duplicates,
                             min_response_words=args.min_response_words, max_words=args.max_words,
                             max_tokens=args.max_tokens, tokenizer=tokenizer)
        for line in report.lines():
            print(line)
        print(f"{args.out}: kept rows written")
        if args.report:
            with open(args.report, "w") as fh:
                json.dump({"counts": report.counts(), "drops": [vars(d) for d in report.drops]}, fh, indent=2)
        return 0

    if args.verb == "sample":
        import torch

        from alignkit.data.records import read_records
        from alignkit.errors import DataError
        from alignkit.models import load_causal_lm, load_tokenizer
        from alignkit.models.generate import sample_for_ranking
        from alignkit.training.run import quiet_libraries

        quiet_libraries()
        records = read_records(args.prompts)[: args.limit or None]
        for r in records:
            if not isinstance(r.row.get("prompt"), str):
                raise DataError(f"{r.where}: expected a string field 'prompt'")
        torch.manual_seed(args.seed)
        rows, dropped = sample_for_ranking(load_causal_lm(args.model_dir), load_tokenizer(args.model_dir),
                                           [r.row for r in records], args.k, args.temperature, args.max_new_tokens)
        with open(args.out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{args.out}: {len(rows)} prompts with up to {args.k} responses; {dropped} dropped (fewer than 2 different)")
    elif args.verb == "export-ranking":
        from alignkit.data.sheets import export_ranking_sheet

        for name, path in export_ranking_sheet(args.samples, args.out_dir, args.seed).items():
            print(f"{name}: {path}")
    else:
        from alignkit.data.sheets import import_ranking_sheet

        rows = import_ranking_sheet(args.sheet_csv, args.key_json)
        with open(args.out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{args.out}: {len(rows)} ranked prompts")
    return 0


def cmd_eval(argv: list[str]) -> int:
    if argv and argv[0] == "export-human":
        p = argparse.ArgumentParser(prog="alignkit eval export-human",
                                    description="A blinded, shuffled side-by-side sheet (CSV + HTML) of two models' answers.")
        p.add_argument("responses", help="responses.jsonl from alignkit eval")
        p.add_argument("out_dir")
        p.add_argument("--models", required=True, help="the two models to compare, as A,B (names in responses.jsonl)")
        p.add_argument("--seed", type=int, default=0)
        args = p.parse_args(argv[1:])
        from alignkit.eval.human import export_human_sheet

        names = args.models.split(",")
        if len(names) != 2:
            raise AlignkitError(f"--models takes two names separated by a comma, got '{args.models}'")
        for name, path in export_human_sheet(args.responses, names[0], names[1], args.out_dir, args.seed).items():
            print(f"{name}: {path}")
        return 0
    if argv and argv[0] == "import-human":
        p = argparse.ArgumentParser(prog="alignkit eval import-human", description="Win rate from a filled sheet.")
        p.add_argument("sheet_csv")
        p.add_argument("key_json")
        args = p.parse_args(argv[1:])
        from alignkit.eval.human import import_human_sheet

        r = import_human_sheet(args.sheet_csv, args.key_json)
        lo, hi = r["win_rate_ci95"]
        print(f"{r['model']} vs {r['versus']}: {r['wins']} wins, {r['losses']} losses, {r['ties']} ties; win rate "
              f"{100 * r['win_rate']:.1f}% [95% CI {100 * lo:.1f}-{100 * hi:.1f}] of {r['wins'] + r['losses']} decided")
        return 0
    return _stage_command("eval", C.EvalConfig, run_eval)(eval_models_as_override(argv))


def eval_models_as_override(argv: list[str]) -> list[str]:
    """`alignkit eval [CONFIG.yaml] MODEL [NAME=MODEL ...] key=value ...`: the models may be listed
    directly; anything that is not the config file or a config key goes into `models`."""
    from alignkit.config import EvalConfig, all_keys

    keys = set(all_keys(EvalConfig))
    config, models, rest = [], [], []
    for i, arg in enumerate(argv):
        if i == 0 and arg.endswith((".yaml", ".yml")) and "=" not in arg:
            config.append(arg)
        elif arg in ("-h", "--help") or ("=" in arg and arg.split("=", 1)[0] in keys):
            rest.append(arg)
        else:
            models.append(arg)
    if models and any(a.startswith("models=") for a in rest):
        raise AlignkitError("give the models either as arguments or as models=[...], not both")
    return config + ([f"models=[{','.join(models)}]"] if models else []) + rest


def cmd_world(argv: list[str]) -> int:
    if argv and argv[0] == "annotate":
        if len(argv) < 3:
            print("usage: alignkit world annotate SHEET.csv KEY.json [label_noise]")
            return 2
        from alignkit.world.annotate import fill_ranking_sheet

        try:
            noise = float(argv[3]) if len(argv) > 3 else 0.0
        except ValueError:
            noise = -1.0
        if not 0.0 <= noise <= 1.0:
            raise AlignkitError(f"label_noise must be a number in [0, 1], got '{argv[3]}'")
        n = fill_ranking_sheet(argv[1], argv[2], noise)
        print(f"{argv[1]}: {n} rows ranked by the simulated annotator")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] != "data" or len(argv) < 2:
        print("usage: alignkit world data OUT_DIR [key=value ...]   (keys: alignkit world data --help)\n"
              "       alignkit world annotate SHEET.csv KEY.json [label_noise]")
        if len(argv) > 1 and argv[1] in ("-h", "--help"):
            from alignkit.config import WorldConfig, describe

            for key, tp, default, doc in describe(WorldConfig):
                print(f"  {key} ({tp}, default {default})\n      {doc}")
        return 0 if argv and argv[0] in ("-h", "--help") or (len(argv) > 1) else 2
    from alignkit.config import WorldConfig, load_config
    from alignkit.world.datasets import write_world_data

    cfg = load_config(WorldConfig, None, argv[2:])
    for name, path in write_world_data(argv[1], cfg).items():
        print(f"{name}: {path}")
    return 0


def cmd_demo(argv: list[str]) -> int:
    return COMMANDS["pipeline"][0]([str(recipes.ROOT / "demo.yaml"), *argv])


def cmd_configs(argv: list[str]) -> int:
    """`alignkit configs ls` lists the shipped recipes; `alignkit configs cp NAME DEST` copies one
    (with the base files it builds on) to edit; a stage command also takes a recipe's NAME."""
    if argv[:1] == ["ls"] and len(argv) == 1:
        for name in recipes.names():
            print(name)
        return 0
    if argv[:1] == ["cp"] and len(argv) == 3:
        for path in recipes.copy(argv[1], argv[2]):
            print(f"wrote {path}")
        return 0
    print("usage: alignkit configs ls | alignkit configs cp NAME DEST\n\nThe recipes ship inside the package; "
          "a stage command takes a NAME too (alignkit sft sft/lora model.path=...).", file=sys.stderr if argv else None)
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


# A config file names no stage: these tell one from its folder or file name (configs/sft/lora.yaml).
STAGE_CONFIGS = {"pretrain": C.PretrainConfig, "sft": C.SFTConfig, "rm": C.RMConfig, "ppo": C.PPOConfig,
                 "grpo": C.GRPOConfig, "dpo": C.DPOConfig, "distill": C.DistillConfig,
                 "best-of-n": C.BestOfNConfig, "pipeline": C.PipelineConfig}


def cmd_validate(argv: list[str]) -> int:
    """`alignkit validate [STAGE] CONFIG [key=value ...]`: load and check the config as the stage
    would, check that the files and directories it names exist, print it resolved; train nothing."""
    from pathlib import Path

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: alignkit validate [STAGE] CONFIG [key=value ...]\n\nLoads the config (the stage from its "
              f"folder or name unless given: {', '.join(STAGE_CONFIGS)}), checks every path it names and prints "
              "it resolved. Exit status 2 when something is wrong.")
        return 0
    stage = argv.pop(0) if argv[0] in STAGE_CONFIGS else None
    if not argv or "=" in argv[0]:
        raise AlignkitError("alignkit validate needs a config file or recipe name")
    path = Path(config_path(argv[0]))
    if stage is None:
        names = [path.parent.name, path.stem, path.stem.split("-")[0]]
        hints = ["pipeline" if p == "demo" else p for p in names if p in STAGE_CONFIGS or p == "demo"]
        if not hints:
            raise AlignkitError(f"cannot tell which stage {path} is for; name it: alignkit validate "
                                f"{{{','.join(STAGE_CONFIGS)}}} {argv[0]}")
        stage = hints[0]
    cfg = C.load_config(STAGE_CONFIGS[stage], str(path), argv[1:])
    print(C.to_yaml(cfg), end="")
    problems = C.missing_paths(cfg)
    for key, value in problems:
        print(f"error: {key}={value} does not exist", file=sys.stderr)
    print(f"{stage} config {path}: " + ("ok" if not problems else f"{len(problems)} path(s) missing"), file=sys.stderr)
    return 2 if problems else 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "pretrain": (_stage_command("pretrain", C.PretrainConfig, run_pretrain),
                 "train a tokenizer and a small base model from scratch (the demo world's corpus by default)"),
    "sft": (_stage_command("sft", C.SFTConfig, run_sft),
            "supervised fine-tuning on instruction-response data"),
    "pipeline": (_stage_command("pipeline", C.PipelineConfig, run_pipeline),
                 "run the stages a config lists (the demo: configs/demo.yaml)"),
    "world": (cmd_world, "write the demo world's data sets (alignkit world data OUT_DIR [key=value ...])"),
    "rm": (_stage_command("rm", C.RMConfig, run_rm),
           "train a reward model on pairwise or ranked preference data"),
    "ppo": (_stage_command("ppo", C.PPOConfig, run_ppo),
            "RLHF: PPO on a policy with a reward model and a KL penalty to the reference"),
    "grpo": (_stage_command("grpo", C.GRPOConfig, run_grpo),
             "critic-free RL (GRPO, Dr. GRPO, RLOO, REINFORCE++) with reward functions and/or a reward model"),
    "dpo": (_stage_command("dpo", C.DPOConfig, run_dpo),
            "offline preference optimisation (DPO, cDPO, IPO, hinge, SimPO, ORPO) on preference data"),
    "distill": (_stage_command("distill", C.DistillConfig, run_distill),
                "distil a teacher into a student: on the teacher's text (sequence) or its token distributions (token)"),
    "eval": (cmd_eval, "compare models on a prompt set (metrics, reward, win rates, refusals, with intervals); "
                       "export-human / import-human for people's side-by-side ratings"),
    "best-of-n": (_stage_command("best-of-n", C.BestOfNConfig, run_best_of_n),
                  "sample n responses per prompt, keep the reward model's favourite: SFT data and the reward gain per n"),
    "data": (cmd_data, "self-instruct generation, a data report before training, filters; collect rankings from people"),
    "merge": (cmd_merge, "merge a LoRA adapter into its base model"),
    "convert": (cmd_convert, "write any loadable model (HF, .gguf, adapter) as a plain safetensors HF directory"),
    "chat": (cmd_chat, "talk to a model in the terminal"),
    "serve": (cmd_serve, "serve a model over the OpenAI API (dynamic batching, streaming, the safety filter)"),
    "tiny-model": (cmd_tiny_model, "build a tiny model for tests and experiments"),
    "plot": (cmd_plot, "draw a run's metrics as PNG curves"),
    "demo": (cmd_demo, "the whole pipeline on the embedded demo world (configs/demo.yaml)"),
    "configs": (cmd_configs, "the shipped recipes: ls lists them, cp NAME DEST copies one to edit"),
    "validate": (cmd_validate, "load a config, check the paths it names, print it resolved; train nothing"),
}


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # the reader went away (`alignkit --help | head`): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 0


def run_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: alignkit COMMAND [ARGS]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<12} {help_text}")
        print("\n`alignkit COMMAND --help` for a command's options.")
        return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"alignkit {version('alignkit')}")
        except PackageNotFoundError:  # run from a source tree without installing
            print("alignkit (not installed)")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        print(f"error: unknown command '{name}'" + (f"; did you mean '{close[0]}'?" if close else ""), file=sys.stderr)
        return 2
    try:
        code = COMMANDS[name][0](rest)
        if "torch.distributed" in sys.modules:  # a stage ran (plain commands never load it)
            from alignkit.training.run import end_processes

            end_processes()
        return code
    except AlignkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
