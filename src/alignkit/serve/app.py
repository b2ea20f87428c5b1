"""`alignkit serve`: a model behind the OpenAI API (chat completions, completions, models, health).

setup   load the model (a directory, a LoRA adapter directory, a run directory or a hub id) and its
        tokenizer, the safety filter when asked, the batcher's worker thread
serve   each request: the key (with --api-key-env), the body's size, its fields (a 400 naming the
        field otherwise), the filter on the request (a blocked one never reaches the model), the
        chat template, the context length, then the batcher; the reply whole or as server-sent
        events; the filter on the reply (with the filter on, a stream is sent once the reply passed)
stop    Ctrl-C: the server stops taking connections, the requests in flight finish, the worker stops

Binds to 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.serve.batcher import Batcher, Job
from alignkit.serve.protocol import (APIError, Choice, Limits, Request, chat_request, chat_response, chunk,
                                     completion_request, completion_response, new_id)


@dataclass
class Server:
    """What the app serves: the model's name, its tokenizer and batcher, the limits, the filter, the key."""

    name: str
    tokenizer: Any
    batcher: Batcher
    limits: Limits = field(default_factory=Limits)
    safety: Any = None
    api_key: str = ""
    requests: int = 0


def load_server(model_path: str, name: str = "", limits: Limits | None = None, filter_rules: str | None = None,
                api_key: str = "", max_batch: int = 32, wait_s: float = 0.01, queue_size: int = 256,
                device: str = "", filter_classifier: str | None = None) -> Server:
    """A Server for a model directory, adapter directory, run directory (its model/) or hub id."""
    import torch

    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.loading import is_hub_id

    path = Path(model_path)
    if not is_hub_id(model_path) and (path / "model").is_dir() and not (path / "config.json").exists() \
            and not (path / "adapter_config.json").exists():
        path = path / "model"  # a run directory
    where = model_path if is_hub_id(model_path) else str(path)
    tokenizer, model = load_tokenizer(where), load_causal_lm(where)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    limits = limits or Limits()
    most = getattr(model.config, "max_position_embeddings", None)
    if most:
        limits.context_length = min(limits.context_length, int(most))
    safety = None
    if filter_rules is not None:
        from alignkit.safety import load_filter

        safety = load_filter(None if filter_rules in ("", "default") else filter_rules, filter_classifier)
    batcher = Batcher(model, tokenizer, max_batch=max_batch, wait_s=wait_s, queue_size=queue_size)
    return Server(name or Path(str(model_path).rstrip("/")).name, tokenizer, batcher, limits, safety, api_key)


def build_app(server: Server) -> Any:
    """The Starlette app: the routes, the error format, the batcher started and stopped with it."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def error(exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    def authorize(request: HTTPRequest) -> None:
        if not server.api_key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        # compare_digest: the time taken does not depend on how much of the key matched
        if not hmac.compare_digest(token.encode(), server.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key",
                           kind="authentication_error")

    async def read_json(request: HTTPRequest) -> Any:
        limit = server.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body is {int(declared):,} bytes; at most {limit:,} are accepted")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise APIError(413, f"the request body is over {limit:,} bytes")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the request body is not valid JSON: {exc}") from None

    def check_model(req: Request) -> None:
        if req.model and req.model != server.name:
            raise APIError(404, f"the model '{req.model}' does not exist here; this server serves '{server.name}'",
                           param="model", code="model_not_found")

    def prompt_ids(req: Request) -> list[int]:
        if req.messages is not None:
            from alignkit.data.templates import render

            text = render(server.tokenizer, req.messages, add_generation_prompt=True)
        else:
            text = req.prompt or ""
        ids = server.tokenizer(text, add_special_tokens=req.messages is None)["input_ids"]
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        if len(ids) + req.sampling.max_tokens > server.limits.context_length:
            raise APIError(400, f"the prompt has {len(ids)} tokens and max_tokens is {req.sampling.max_tokens}: "
                                f"together over the context length {server.limits.context_length}; shorten the "
                                "prompt or lower max_tokens", param="max_tokens", code="context_length_exceeded")
        return ids

    def blocked(req: Request) -> Choice | None:
        """The refusal when the filter blocks the request, else None."""
        if server.safety is None:
            return None
        from alignkit.safety.filter import request_text

        verdict = server.safety.check_input(request_text(req.messages if req.messages is not None else req.prompt))
        return Choice(server.safety.refusal(verdict), "content_filter") if verdict.blocked else None

    def screened(choices: list[Choice], req: Request) -> list[Choice]:
        if server.safety is None:
            return choices
        from alignkit.safety.filter import request_text

        asked = request_text(req.messages if req.messages is not None else req.prompt)
        verdicts = server.safety.check_outputs([c.text for c in choices], [asked] * len(choices))
        return [Choice(server.safety.refusal(v), "content_filter", c.tokens) if v.blocked else c
                for c, v in zip(choices, verdicts)]

    async def complete(request: HTTPRequest, chat: bool) -> Response:
        try:
            authorize(request)
            body = await read_json(request)
            req = chat_request(body, server.limits) if chat else completion_request(body, server.limits)
            check_model(req)
            server.requests += 1
            rid = new_id("chatcmpl" if chat else "cmpl")
            refusal = blocked(req)
            ids = [] if refusal else prompt_ids(req)
            respond = chat_response if chat else completion_response
            if refusal:
                choices = [refusal] * req.n
                if req.stream:
                    return events(stream_whole(rid, req, chat, choices, 0))
                return JSONResponse(respond(rid, server.name, choices, 0))
            loop = asyncio.get_running_loop()
            live = req.stream and server.safety is None  # with the filter, a reply is sent once it passed
            deltas: asyncio.Queue | None = asyncio.Queue() if live else None
            job = Job(ids, req.sampling, req.n, loop, loop.create_future(),
                      on_text=(lambda i, text, finish: deltas.put_nowait((i, text, finish))) if live else None)
            server.batcher.submit(job)
            if live:
                return events(stream_live(rid, req, chat, job, deltas, len(ids)))
            choices = screened(await job.future, req)
            if req.stream:
                return events(stream_whole(rid, req, chat, choices, len(ids)))
            return JSONResponse(respond(rid, server.name, choices, len(ids)))
        except APIError as exc:
            return error(exc)

    def events(gen: AsyncIterator[dict]) -> StreamingResponse:
        async def encode() -> AsyncIterator[str]:
            async for payload in gen:
                yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(encode(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def usage_chunk(rid: str, chat: bool, prompt_tokens: int, choices: list[Choice]) -> dict:
        from alignkit.serve.protocol import usage

        return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
                "model": server.name, "choices": [], "usage": usage(prompt_tokens, choices)}

    async def stream_whole(rid: str, req: Request, chat: bool, choices: list[Choice], prompt_tokens: int
                           ) -> AsyncIterator[dict]:
        for i, c in enumerate(choices):
            yield chunk(rid, server.name, chat, i, c.text, None, first=True)
            yield chunk(rid, server.name, chat, i, None, c.finish_reason)
        if req.include_usage:
            yield usage_chunk(rid, chat, prompt_tokens, choices)

    async def stream_live(rid: str, req: Request, chat: bool, job: Job, deltas: asyncio.Queue, prompt_tokens: int
                          ) -> AsyncIterator[dict]:
        started, open_rows = set(), req.n
        while open_rows:
            get = asyncio.ensure_future(deltas.get())
            done, _ = await asyncio.wait({get, job.future}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                job.future.result()  # a failed batch raises here; a finished one has left its deltas queued
                if deltas.empty():
                    break
                continue
            i, text, finish = get.result()
            first = i not in started
            started.add(i)
            if text or first:
                yield chunk(rid, server.name, chat, i, text, None, first=first)
            if finish:
                yield chunk(rid, server.name, chat, i, None, finish)
                open_rows -= 1
        if req.include_usage:
            yield usage_chunk(rid, chat, prompt_tokens, await job.future)

    async def chat_completions(request: HTTPRequest) -> Response:
        return await complete(request, chat=True)

    async def completions(request: HTTPRequest) -> Response:
        return await complete(request, chat=False)

    async def models(request: HTTPRequest) -> Response:
        try:
            authorize(request)
        except APIError as exc:
            return error(exc)
        return JSONResponse({"object": "list", "data": [{"id": server.name, "object": "model", "created": 0,
                                                         "owned_by": "alignkit"}]})

    async def health(request: HTTPRequest) -> Response:
        return JSONResponse({"status": "ok", "model": server.name, "waiting": server.batcher.waiting})

    async def not_found(request: HTTPRequest, exc: Exception) -> Response:
        return error(APIError(404, f"no route {request.method} {request.url.path}; this server has /v1/models, "
                                   "/v1/chat/completions, /v1/completions and /health", code="not_found"))

    async def not_allowed(request: HTTPRequest, exc: Exception) -> Response:
        return error(APIError(405, f"{request.method} is not allowed on {request.url.path}"))

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if server.batcher.thread is None:
            server.batcher.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, server.batcher.close)

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/models", models, methods=["GET"]),
              Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})


def serve(server: Server, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run until Ctrl-C; then stop taking connections, let the requests in flight finish, stop the worker."""
    import uvicorn

    print(f"serving '{server.name}' on http://{host}:{port}/v1 (max batch {server.batcher.max_batch}, wait "
          f"{1000 * server.batcher.wait_s:.0f} ms, queue {server.batcher.queue_size})", flush=True)
    uvicorn.run(build_app(server), host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


def api_key_from_env(var: str) -> str:
    """The key in environment variable `var` ('' when var is '')."""
    from alignkit.eval.api_judge import key_from_env

    return key_from_env(var, "--api-key-env")
