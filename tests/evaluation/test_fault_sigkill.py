"""Fault test: an online DVI run killed with SIGKILL part-way, then started again with the same command, completes;
every answer line parses, each prompt is answered once, and every answer equals greedy decoding."""
import json
import os
import signal
import subprocess
import sys
import time

import torch

from evaluation.questions import chat_prompt_ids
from kangaroo.greedy import eos_ids_of, greedy_decode
from kangaroo.model_loading import load_causal_lm, load_tokenizer
from tests.helpers import REPO

N_PROMPTS = 24


def answers(path):
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_sigkill_mid_run_then_same_command_completes_losslessly(tiny_model_dir, tmp_path):
    prompts = tmp_path / "sharegpt.jsonl"
    texts = [f"Tell me fact number {i} about the number {i * 7}." for i in range(N_PROMPTS)]
    prompts.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": t},
                                                             {"from": "gpt", "value": "ok"}]}) + "\n" for t in texts))
    ans, ck = tmp_path / "answers.jsonl", tmp_path / "ck"
    cmd = [sys.executable, "-m", "evaluation.inference_kangaroo", "--model-id", str(tiny_model_dir), "--device", "cpu",
           "--num-threads", "1", "--dvi-online", "true", "--prompts-jsonl", str(prompts), "--max-prompts",
           str(N_PROMPTS), "--max-new-tokens", "16", "--steps", "4", "--threshold", "0.0", "--dvi-batch-size", "8",
           "--dvi-buffer-size", "64", "--dvi-update-every", "2", "--dvi-topk", "64", "--save-lora-every", "3",
           "--save-lora-path", str(ck), "--metrics-out", str(tmp_path / "metrics"), "--answer-file", str(ans),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and len(answers(ans)) < 3:  # wait for the run to be well under way
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed (rc {proc.returncode}): {err}"
    killed_at = len(answers(ans))
    assert 3 <= killed_at < N_PROMPTS
    assert any(ck.glob("step_*.pt")), "no periodic checkpoint before the kill: the resume is not exercised"

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[dvi] resuming from" in done.stdout and f"({killed_at} already answered)" in done.stdout

    lines = answers(ans)
    assert all(line.endswith("\n") for line in lines)
    records = [json.loads(line) for line in lines]
    assert sorted(r["question_id"] for r in records) == sorted(f"sharegpt-{i}" for i in range(N_PROMPTS))
    tok = load_tokenizer(str(tiny_model_dir))
    lm = load_causal_lm(str(tiny_model_dir), device="cpu", dtype="float32")
    eos = eos_ids_of(tok, lm.config)
    for r in records:
        i = int(r["question_id"].split("-")[1])
        ids = chat_prompt_ids(tok, [{"role": "user", "content": texts[i]}], str(tiny_model_dir))
        assert r["token_ids"] == [greedy_decode(lm, ids, 16, eos).tokens], r["question_id"]
    assert torch.load(ck / "final.pt", weights_only=True)["extra"]["finished"] is True
