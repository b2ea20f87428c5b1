"""Serving throughput as clients grow: `alignkit serve` beside `transformers serve` (without and with its
continuous batching), the same model and requests, each server in a process of its own on 127.0.0.1.

    python benchmarks/bench_serve.py                   # ~10 minutes on 2 cores; benchmarks/results/serve.json
    python benchmarks/bench_serve.py --clients 1,8 --requests 16

The model is a small Llama built in code (--hidden, --layers; a BPE tokenizer trained on the demo
world's text) unless --model names a directory. Every request is one chat turn from the demo world's
prompts, greedy, max_tokens --max-tokens; at each level `clients` threads of the official openai client
send --requests requests in all, and requests/s and completion tokens/s are measured from the first
send to the last answer (the server is warmed up first with a request of each level's size). One run;
traffic goes to the loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, seconds: float = 300) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up")


def build_model(out: Path, hidden: int, layers: int) -> Path:
    from alignkit.models import build_tiny_model
    from alignkit.world import sample_items

    corpus = [i.prompt + " " + i.answer for i in sample_items("train", 3000, seed=0)]
    build_tiny_model(out, corpus, "llama", 512, hidden, layers, 4)
    return out


def measure(port: int, model: str, prompts: list[str], clients: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)

    def one(prompt: str) -> int:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           temperature=0, max_tokens=max_tokens)
        return r.usage.completion_tokens if r.usage else 0

    with ThreadPoolExecutor(clients) as pool:  # warm-up at this level's concurrency
        list(pool.map(one, prompts[:clients]))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = list(pool.map(one, [prompts[i % len(prompts)] for i in range(requests)]))
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "seconds": round(seconds, 2),
            "requests_per_s": round(requests / seconds, 2), "completion_tokens_per_s": round(sum(tokens) / seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="", help="a model directory (default: a small Llama built in code)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--clients", default="1,4,16,64")
    p.add_argument("--requests", type=int, default=64, help="requests per level")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--servers", default="alignkit,transformers,transformers-cb")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = p.parse_args()
    from alignkit.world import sample_items

    prompts = [i.prompt for i in sample_items("heldout_phrasing", 256, seed=1)]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = Path(args.model) if args.model else build_model(work / "model", args.hidden, args.layers)
    name = "bench"
    commands = {
        "alignkit": [sys.executable, "-m", "alignkit", "serve", str(model_dir), "--name", name, "--max-batch", "64"],
        "transformers": [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--device", "cpu",
                         "--host", "127.0.0.1"],
        "transformers-cb": [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--device",
                            "cpu", "--host", "127.0.0.1", "--continuous-batching"],
    }
    levels = [int(c) for c in args.clients.split(",")]
    results = []
    for server in args.servers.split(","):
        port = free_port()
        proc = subprocess.Popen([*commands[server], "--port", str(port)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            wait_healthy(port, proc)
            served = name if server == "alignkit" else str(model_dir)
            for clients in levels:
                row = {"server": server, **measure(port, served, prompts, clients, args.requests, args.max_tokens)}
                print(row, flush=True)
                results.append(row)
        except Exception as exc:  # a server that cannot run here is reported, not fatal
            print(f"{server}: {type(exc).__name__}: {exc}", flush=True)
            results.append({"server": server, "error": f"{type(exc).__name__}: {exc}"[:300]})
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    settings = {"model": args.model or f"Llama hidden {args.hidden}, {args.layers} layers, vocab 512 (built in code)",
                "max_tokens": args.max_tokens, "requests_per_level": args.requests, "greedy": True,
                "threads": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print("| server | " + " | ".join(f"{c} clients" for c in levels) + " |")
    print("| --- |" + " ---: |" * len(levels))
    for server in args.servers.split(","):
        rows = {r["clients"]: r for r in results if r["server"] == server and "clients" in r}
        print(f"| {server} | " + " | ".join(f"{rows[c]['requests_per_s']:.1f}" if c in rows else "-" for c in levels)
              + " |")


if __name__ == "__main__":
    main()
