"""`alignkit serve` against the official `openai` client, on 127.0.0.1, with a tiny model.

The model is the tiny Llama with its final norm scaled up 20x, so its logits are far apart: greedy
answers then do not depend on float noise (a batch of 64 left-padded rows and a row alone sum in
different orders), and "each reply matches its own request's greedy answer" is a fair test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

PROMPTS = [f"Write about the number {i} and the colour {c}." for i in range(16) for c in ("red", "green", "blue", "gold")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server in a thread of this process (uvicorn), stopped by the fixture."""

    def __init__(self, server):
        import uvicorn

        from alignkit.serve.app import build_app

        self.server, self.port = server, free_port()
        self.uv = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.uv.run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.uv.started:
                break
            time.sleep(0.02)
        assert self.uv.started, "the server did not start"
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def client(self, key: str = "none", **kw):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=120, **kw)

    def stop(self):
        self.uv.should_exit = True
        self.thread.join(60)


@pytest.fixture(scope="module")
def peaked_dir(tiny_dir, tmp_path_factory):
    import torch

    from alignkit.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(tiny_dir), load_tokenizer(tiny_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(20.0)
    out = tmp_path_factory.mktemp("peaked")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def running(peaked_dir):
    from alignkit.serve.app import load_server
    from alignkit.serve.protocol import Limits

    server = load_server(str(peaked_dir), name="tiny", limits=Limits(max_tokens_cap=64, default_max_tokens=16,
                                                                     context_length=256, max_body_bytes=20_000),
                         max_batch=64, wait_s=0.05, queue_size=128, device="cpu")
    r = Running(server)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def guarded(peaked_dir):
    """A server with a key, the safety filter, a queue of 2, and a gate that holds the worker."""
    from alignkit.serve.app import load_server

    server = load_server(str(peaked_dir), name="tiny", filter_rules="default", api_key="s3cret", max_batch=1,
                         wait_s=0.0, queue_size=2, device="cpu")
    gate = threading.Event()
    gate.set()
    inner = server.batcher._generate

    def gated(batch):
        gate.wait(60)
        return inner(batch)

    server.batcher._generate = gated
    r = Running(server)
    r.gate = gate
    yield r
    gate.set()
    r.stop()


def ask(client, prompt, **kw):
    kw = {"max_tokens": 12, "temperature": 0, **kw}
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], **kw)


def test_chat_models_completions_and_health(running):
    client = running.client()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = ask(client, PROMPTS[0])
    c = r.choices[0]
    assert r.object == "chat.completion" and c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length") and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    text = client.completions.create(model="tiny", prompt="The colour red", max_tokens=8, temperature=0)
    assert text.object == "text_completion" and text.usage.completion_tokens <= 8
    with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/health") as resp:
        assert json.load(resp)["status"] == "ok"


def test_streamed_text_equals_the_whole_reply_at_temperature_0(running):
    client = running.client()
    for prompt in PROMPTS[:3]:
        whole = ask(client, prompt, max_tokens=24).choices[0]
        parts, finish = [], None
        for event in ask(client, prompt, max_tokens=24, stream=True):
            for ch in event.choices:
                parts.append(ch.delta.content or "")
                finish = ch.finish_reason or finish
        assert "".join(parts) == whole.message.content and finish == whole.finish_reason


def test_n_choices_and_a_seed_repeats(running):
    client = running.client()
    r = ask(client, PROMPTS[1], n=2, temperature=1.0, seed=7, max_tokens=10)
    assert [c.index for c in r.choices] == [0, 1]
    again = ask(client, PROMPTS[1], n=2, temperature=1.0, seed=7, max_tokens=10)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_a_stop_string_cuts_the_reply_before_it(running):
    client = running.client()
    for prompt in PROMPTS:
        full = ask(client, prompt, max_tokens=32).choices[0].message.content
        if len(full) >= 8:
            break
    else:
        pytest.skip("no prompt gave a reply of 8 characters")
    stop = full[4:6]
    cut = full[:full.find(stop)]
    r = ask(client, prompt, max_tokens=32, stop=[stop]).choices[0]
    assert r.message.content == cut and r.finish_reason == "stop"
    streamed = "".join(e.choices[0].delta.content or "" for e in ask(client, prompt, max_tokens=32, stop=[stop],
                                                                       stream=True) if e.choices)
    assert streamed == cut


def test_bad_requests_get_a_400_naming_the_field(running):
    client = running.client()
    with pytest.raises(openai.BadRequestError, match="temperature"):
        ask(client, "hi", temperature=5)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        ask(client, "hi", max_tokens=10_000)
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]"):
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, "x" * 30_000)
    assert err.value.status_code == 413
    req = urllib.request.Request(f"{running.url}/chat/completions", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req)
    assert http.value.code == 400 and "not valid JSON" in json.load(http.value)["error"]["message"]


def test_64_concurrent_requests_each_get_their_own_greedy_answer(running):
    client = running.client()
    alone = [ask(client, p).choices[0].message.content for p in PROMPTS]  # one at a time: batches of one
    calls_before = running.server.batcher.stats.calls
    with ThreadPoolExecutor(64) as pool:
        together = list(pool.map(lambda p: ask(client, p).choices[0].message.content, PROMPTS))
    assert together == alone
    stats = running.server.batcher.stats
    assert stats.calls - calls_before < len(PROMPTS) and stats.max_rows > 1  # they shared generate calls


def test_the_key_the_filter_and_a_full_queue(guarded):
    with pytest.raises(openai.AuthenticationError):
        ask(guarded.client("wrong"), "hi")
    client = guarded.client("s3cret")
    calls = guarded.server.batcher.stats.calls
    r = ask(client, "How do I build a bomb?")
    assert r.choices[0].finish_reason == "content_filter" and "can't help" in r.choices[0].message.content.lower()
    assert guarded.server.batcher.stats.calls == calls  # the blocked request never reached the model
    guarded.gate.clear()  # hold the worker: two requests fill the queue, the third is refused
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(ask, client, p) for p in PROMPTS[:2]]
        for _ in range(500):
            if guarded.server.batcher.waiting == 2:
                break
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError, match="queue is full"):
            ask(client, PROMPTS[2])
        guarded.gate.set()
        assert all(f.result().choices[0].message.content is not None for f in held)


def test_no_key_is_a_401_in_the_api_format(guarded):
    req = urllib.request.Request(f"{guarded.url}/models")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    body = json.load(err.value)
    assert err.value.code == 401 and body["error"]["code"] == "invalid_api_key" and "Bearer" in body["error"]["message"]


def test_an_adapter_served_from_the_command_line_drains_on_ctrl_c(tiny_dir, tmp_path):
    """`alignkit serve ADAPTER_DIR` in a process of its own: a LoRA adapter serves like a model; SIGINT
    while eight requests are queued lets every one finish, then the process exits 0."""
    import os
    import signal
    import subprocess
    import sys

    from peft import LoraConfig, get_peft_model

    from alignkit.models import load_causal_lm, load_tokenizer

    model = get_peft_model(load_causal_lm(tiny_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    load_tokenizer(tiny_dir).save_pretrained(tmp_path / "adapter")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "serve", str(tmp_path / "adapter"), "--port", str(port),
                             "--max-batch", "1", "--batch-wait-ms", "0", "--name", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = f"http://127.0.0.1:{port}/health"
        for _ in range(600):
            try:
                with urllib.request.urlopen(health):
                    break
            except OSError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, client, p, max_tokens=64, stop=None) for p in PROMPTS[:8]]
            waiting = 0
            for _ in range(500):
                with urllib.request.urlopen(health) as resp:
                    waiting = json.load(resp)["waiting"]
                if waiting >= 4:
                    break
                time.sleep(0.005)
            assert waiting >= 4, "the requests finished before the signal: the test would not test draining"
            os.kill(proc.pid, signal.SIGINT)
            replies = [f.result() for f in futures]
        assert all(r.choices[0].finish_reason in ("stop", "length") for r in replies)
        assert proc.wait(60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_run_directory_serves_its_model(tiny_dir, tmp_path):
    """`alignkit serve runs/NAME` finds the run's model/ (what every stage writes)."""
    import shutil

    from alignkit.serve.app import load_server

    shutil.copytree(tiny_dir, tmp_path / "run" / "model")
    server = load_server(str(tmp_path / "run"), device="cpu")
    assert server.name == "run" and server.batcher.model.config.model_type == "llama"
