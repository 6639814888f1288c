"""Concurrent streaming clients over loopback: each sends its chat requests one after another (stream, with the token
ids), timing the first token and the last; a phase is a list of prompts served by ``concurrency`` such clients,
bounded in count (the list) and in duration (no new request after ``max_seconds``)."""
from __future__ import annotations

import json
import queue
import threading
import time

import httpx

TIMEOUT_S = 600  # per request: a bound so that nothing hangs


def one_request(http: httpx.Client, url: str, model: str, prompt: str, max_tokens: int, sampling: dict) -> dict:
    """One streamed chat request (``sampling``: its temperature, top_p, seed): status, ttft_s, total_s, token_ids,
    finish_reason (or error / retry_after)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "return_token_ids": True, **sampling}
    t0 = time.perf_counter()
    first, ids, finish = None, [], None
    try:
        with http.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT_S) as r:
            if r.status_code != 200:
                return {"status": r.status_code, "retry_after": r.headers.get("Retry-After"),
                        "error": r.read().decode(errors="replace")[:300]}
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    return {"status": 200, "error": obj["error"].get("message"), "token_ids": ids}
                for ch in obj["choices"]:
                    if ch.get("token_ids") and first is None:
                        first = time.perf_counter()
                    ids += ch.get("token_ids") or []
                    finish = ch.get("finish_reason") or finish
    except httpx.HTTPError as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}"}
    end = time.perf_counter()
    return {"status": 200, "ttft_s": None if first is None else first - t0, "total_s": end - t0,
            "token_ids": ids, "finish_reason": finish}


def run_phase(url: str, model: str, prompts: list[tuple[int, str]], concurrency: int, max_tokens: int,
              max_seconds: float, sampling: dict) -> tuple[list[dict], float]:
    """Serve ``prompts`` ((index, text) pairs) with ``concurrency`` clients; returns the records and the wall time."""
    todo: queue.Queue = queue.Queue()
    for p in prompts:
        todo.put(p)
    records: list[dict] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client():
        with httpx.Client() as http:
            while time.monotonic() < deadline:
                try:
                    index, text = todo.get_nowait()
                except queue.Empty:
                    return
                rec = {"prompt": index, "max_tokens": max_tokens,
                       **one_request(http, url, model, text, max_tokens, sampling)}
                with lock:
                    records.append(rec)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, time.perf_counter() - t0


def burst(url: str, model: str, prompts: list[tuple[int, str]], max_tokens: int, sampling: dict) -> list[dict]:
    """Every prompt sent at once, one client each (past the queue bound: some must be turned away with 503)."""
    records: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(len(prompts))

    def client(index, text):
        with httpx.Client() as http:
            start.wait()
            rec = {"prompt": index, "max_tokens": max_tokens,
                   **one_request(http, url, model, text, max_tokens, sampling)}
        with lock:
            records.append(rec)

    threads = [threading.Thread(target=client, args=p, daemon=True) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def percentile(xs: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no data."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
