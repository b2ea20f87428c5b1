"""`alignkit serve`: an aligned model behind the OpenAI API, requests batched dynamically (batcher.py),
with the safety filter on requests and replies when asked (app.py); protocol.py checks requests and
shapes replies."""

from __future__ import annotations

import argparse


def cmd_serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="alignkit serve", description="Serve a model over the OpenAI API "
                                "(/v1/chat/completions, /v1/completions, /v1/models, /health).")
    p.add_argument("model", help="model directory, LoRA adapter directory, run directory, or hub id org/name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="", help="the model's name in the API (default: the directory's name)")
    p.add_argument("--filter", nargs="?", const="default", metavar="RULES.yaml",
                   help="screen requests and replies with the safety filter (the shipped rules, or RULES.yaml)")
    p.add_argument("--filter-classifier", metavar="MODEL",
                   help="add a learned layer to the filter: a harm classifier (e.g. `alignkit rm objective=cost`), "
                        "blocking what it scores above 0 as well (implies --filter)")
    p.add_argument("--api-key-env", default="", metavar="VAR",
                   help="require 'Authorization: Bearer KEY' with KEY from environment variable VAR")
    p.add_argument("--max-batch", type=int, default=32, help="rows (choices) per generate call")
    p.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="how long the oldest waiting request waits for others to join its batch")
    p.add_argument("--queue-size", type=int, default=256, help="requests waiting at most; beyond it: 429")
    p.add_argument("--max-tokens", type=int, default=512, help="the most new tokens a request may ask for")
    p.add_argument("--context-length", type=int, default=4096, help="prompt + new tokens at most (and the model's own)")
    p.add_argument("--max-body-kb", type=int, default=1024, help="request body size limit (KiB)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:1 (default: cuda when there is one)")
    args = p.parse_args(argv)
    from alignkit.serve.app import api_key_from_env, load_server, serve
    from alignkit.serve.protocol import Limits
    from alignkit.training.run import quiet_libraries

    quiet_libraries()
    limits = Limits(max_tokens_cap=args.max_tokens, default_max_tokens=min(128, args.max_tokens),
                    max_n=min(8, args.max_batch), context_length=args.context_length,
                    max_body_bytes=args.max_body_kb * 1024)
    rules = args.filter if args.filter or not args.filter_classifier else "default"
    server = load_server(args.model, args.name, limits, rules, api_key_from_env(args.api_key_env),
                         args.max_batch, args.batch_wait_ms / 1000, args.queue_size, args.device, args.filter_classifier)
    serve(server, args.host, args.port)
    return 0
