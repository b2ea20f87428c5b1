"""Dynamic batching for `alignkit serve`: requests from many clients share one `generate` call.

A worker thread owns the model. It takes the oldest waiting request, then waits up to `wait_s`
(`--batch-wait-ms`) for more, until the batch holds `max_batch` rows (`--max-batch`; a request with
n choices is n rows). Requests that decode alike share a call: every greedy request together, sampled
ones with equal temperature and top-p together; a request with a `seed` runs alone, so the same seed
gives the same answer whoever else is asking. Each row has its own token budget, stop strings and
end: a stopping criterion watches every row after each new token, finishes it on EOS, a stop string or
its max_tokens, and hands its new text to the request (as it comes, for streaming). `generate` stops
once every row is finished, so a short request does not wait for a long one's budget, only for the
batch's longest row. The queue holds at most `queue_size` requests (`--queue-size`); beyond it a
request is refused at once (the server answers 429) rather than waiting without bound.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alignkit.serve.protocol import APIError, Choice, Sampling


@dataclass
class Job:
    """One request in the queue: its prompt tokens, how to decode, how many choices, where results go."""

    prompt_ids: list[int]
    sampling: Sampling
    n: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    on_text: Callable[[int, str, str | None], None] | None = None
    """For streaming: called (in the event loop) with (choice index, new text, finish reason or None)."""
    key: tuple = ()

    def __post_init__(self) -> None:
        self.key = ("seeded", id(self)) if self.sampling.seed is not None else self.sampling.batch_key()


class Row:
    """One choice being decoded: its tokens, the text handed out so far, and whether it has ended."""

    def __init__(self, job: Job, index: int, tokenizer: Any, eos: set[int]) -> None:
        self.job, self.index, self.tokenizer, self.eos = job, index, tokenizer, eos
        self.tokens: list[int] = []
        self.text = ""  # the text so far, cut at a stop string
        self.sent = ""  # what on_text has been given (always a prefix of the final text)
        self.finish: str | None = None

    def add(self, token: int) -> None:
        s = self.job.sampling
        if token in self.eos:
            self.finish = "stop"
        else:
            self.tokens.append(token)
            self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
            cuts = [i for i in (self.text.find(stop) for stop in s.stop) if i >= 0]
            if cuts:
                self.text, self.finish = self.text[:min(cuts)], "stop"
            elif len(self.tokens) >= s.max_tokens:
                self.finish = "length"
        self.hand_out()

    def hand_out(self) -> None:
        """Give the request the text that can no longer change: all of it once the row has ended;
        before, not a trailing partial character, nor a tail that could begin a stop string."""
        ready = self.text if self.finish else self.text.rstrip("\ufffd")
        if not self.finish:
            hold = max((k for stop in self.job.sampling.stop for k in range(1, len(stop))
                        if ready.endswith(stop[:k])), default=0)
            ready = ready[:len(ready) - hold]
        if not ready.startswith(self.sent):  # the decoding of earlier tokens changed: wait for the end
            return
        delta = ready[len(self.sent):]
        if (delta or self.finish) and self.job.on_text is not None:
            self.job.loop.call_soon_threadsafe(self.job.on_text, self.index, delta, self.finish)
        self.sent = ready

    def choice(self) -> Choice:
        return Choice(self.text, self.finish or "length", len(self.tokens))


class WatchRows:
    """A stopping criterion over the batch: feeds each row its new token, and says which have ended."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        for row, token in zip(self.rows, input_ids[:, -1].tolist()):
            if row.finish is None:
                row.add(token)
        return torch.tensor([row.finish is not None for row in self.rows], device=input_ids.device)


@dataclass
class Stats:
    """What the worker did: generate calls, rows per call, tokens, seconds."""

    calls: int = 0
    rows: int = 0
    max_rows: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class Batcher:
    """The queue and the worker thread that drains it into batched generate calls."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 32, wait_s: float = 0.01, queue_size: int = 256):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.wait_s, self.queue_size = max_batch, wait_s, queue_size
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.waiting = 0  # jobs submitted and not yet finished
        self.lock = threading.Lock()
        self.stats = Stats()
        self.thread: threading.Thread | None = None
        eos = tokenizer.eos_token_id
        config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = [e for e in (eos, *(config_eos if isinstance(config_eos, list) else [config_eos])) if e is not None]
        self.eos = set(ids)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids[0]

    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, name="alignkit-serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or APIError 429 when `queue_size` jobs are already waiting."""
        with self.lock:
            if self.waiting >= self.queue_size:
                raise APIError(429, f"the server's queue is full ({self.queue_size} requests waiting); retry later",
                               code="queue_full", kind="rate_limit_error")
            self.waiting += 1
        self.queue.put(job)

    def close(self, timeout: float = 60.0) -> None:
        """Finish every queued job, then stop the worker."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout)

    # ---------------------------------------------------------------- the worker
    def _work(self) -> None:
        pending: collections.deque[Job] = collections.deque()
        closing = False
        while pending or not closing:
            if not pending:
                job = self.queue.get()
                if job is None:
                    closing = True
                    continue
                pending.append(job)
            deadline = time.monotonic() + self.wait_s
            while not closing and sum(j.n for j in pending) < self.max_batch:
                try:
                    job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                else:
                    pending.append(job)
            batch = self._take(pending)
            try:
                choices = self._generate(batch)
            except Exception as exc:  # answer every request of the batch, keep serving
                err = APIError(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")
                for job in batch:
                    job.loop.call_soon_threadsafe(_settle, job.future, None, err)
            else:
                for job, got in zip(batch, choices):
                    job.loop.call_soon_threadsafe(_settle, job.future, got, None)
            finally:
                with self.lock:
                    self.waiting -= len(batch)

    def _take(self, pending: collections.deque[Job]) -> list[Job]:
        """The oldest job and, in arrival order, the others that decode like it, up to max_batch rows."""
        first = pending.popleft()
        batch, rows, rest = [first], first.n, collections.deque()
        while pending:
            job = pending.popleft()
            if job.key == first.key and rows + job.n <= self.max_batch:
                batch.append(job)
                rows += job.n
            else:
                rest.append(job)
        pending.extend(rest)
        return batch

    @torch.no_grad()
    def _generate(self, batch: list[Job]) -> list[list[Choice]]:
        t0 = time.perf_counter()
        prompts = [job.prompt_ids for job in batch for _ in range(job.n)]
        rows = [Row(job, i, self.tokenizer, self.eos) for job in batch for i in range(job.n)]
        width = max(map(len, prompts))
        device = next(self.model.parameters()).device
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):  # left padding: every row's new tokens start at the same column
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        s = batch[0].sampling
        decode = {"do_sample": False} if s.temperature == 0 else {"do_sample": True, "temperature": s.temperature,
                                                                   "top_p": s.top_p, "top_k": 0}
        if s.seed is not None:
            torch.manual_seed(s.seed)
        from transformers import StoppingCriteriaList

        self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                            max_new_tokens=max(job.sampling.max_tokens for job in batch), pad_token_id=self.pad,
                            eos_token_id=sorted(self.eos), stopping_criteria=StoppingCriteriaList([WatchRows(rows)]),
                            **decode)
        for row in rows:  # a row still open ran out of the batch's budget: its own, since budgets are per row
            if row.finish is None:
                row.finish = "length"
                row.hand_out()
        st = self.stats
        st.calls, st.rows, st.max_rows = st.calls + 1, st.rows + len(rows), max(st.max_rows, len(rows))
        st.new_tokens += sum(len(r.tokens) for r in rows)
        st.seconds += time.perf_counter() - t0
        st.batch_sizes.append(len(rows))
        out, k = [], 0
        for job in batch:
            out.append([row.choice() for row in rows[k:k + job.n]])
            k += job.n
        return out


def _settle(future: asyncio.Future, result: Any, error: Exception | None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
