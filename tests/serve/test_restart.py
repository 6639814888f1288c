"""Faults with a real server: kill -9 mid-traffic leaves no damaged checkpoint, and the same command resumes from the
newest one; SIGTERM with a stream in flight lets it finish (a bounded drain), writes final.pt and exits 0."""
import json
import signal

import httpx

from dvi.checkpoint import latest_checkpoint, read_ckpt
from tests.serve.server_process import Server, greedy_chat
from tests.serve.test_server import QUESTIONS, WAIT_S, ask


def stream_in_flight(server, text, max_tokens):
    """Open a streaming chat request and read its first line; returns (response context, line iterator)."""
    body = {"model": server.health()["model"], "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens, "stream": True, "return_token_ids": True, "temperature": 0}
    ctx = httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=WAIT_S)
    lines = ctx.__enter__().iter_lines()
    assert next(lines).startswith("data: ")
    return ctx, lines


def streamed_ids(lines) -> tuple[list[int], bool]:
    ids, done = [], False
    for line in lines:
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            for ch in json.loads(line[6:])["choices"]:
                ids += ch.get("token_ids") or []
    return ids, done


def test_kill9_then_restart_resumes_and_sigterm_drains(tiny_model_dir, tmp_path):
    state = tmp_path / "state"
    ck = state / "checkpoints"
    a = Server(tiny_model_dir, state, "--dvi-online", "true")
    try:
        for q in QUESTIONS[:3]:
            ask(a, q, 16)
        assert any(ck.glob("step_*.pt")), a.output()
        ctx, _ = stream_in_flight(a, QUESTIONS[3], 400)
        a.proc.kill()  # SIGKILL mid-stream, the trainer thread and checkpoints mid-way as they are
        a.proc.wait(timeout=WAIT_S)
        ctx.__exit__(None, None, None)
    finally:
        a.stop(signal.SIGKILL)
    for p in ck.glob("*.pt"):  # every checkpoint under its real name is whole (writes are atomic)
        read_ckpt(p)
    newest = latest_checkpoint(ck)
    saved = read_ckpt(newest)

    b = Server(tiny_model_dir, state, "--dvi-online", "true")
    try:
        h = b.health()
        assert h["resumed_from"] == str(newest) and h["global_step"] == saved["global_step"]
        assert h["trainer_steps"] == saved["extra"]["trainer_steps_total"] > 0
        assert ask(b, QUESTIONS[4], 16)[1] == greedy_chat(tiny_model_dir, QUESTIONS[4], 16)[0]
        ctx, lines = stream_in_flight(b, QUESTIONS[5], 200)
        b.proc.send_signal(signal.SIGTERM)  # the stream in flight must still finish
        ids, done = streamed_ids(lines)
        ctx.__exit__(None, None, None)
        assert b.proc.wait(timeout=WAIT_S * 2) == 0, b.output()
    finally:
        b.stop(signal.SIGKILL)
    ref = greedy_chat(tiny_model_dir, QUESTIONS[5], 200)[0]
    assert done and ids == ref  # all of it, after the signal (the first line read was the role chunk)
    final = read_ckpt(ck / "final.pt")
    assert final["extra"]["finished"] is True and final["global_step"] > saved["global_step"]
    runs = json.loads((state / "run.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["stopped"] is None and runs[1]["stopped"]
    assert runs[1]["resumed_from"] == str(newest) and runs[1]["final"] == str(ck / "final.pt")
