"""A real server process for the tests: ``python -m kangaroo_dvi.serve`` on 127.0.0.1 and a free port, a tiny model
folder, its log in a file; and the greedy reference its answers must equal."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from functools import cache

import httpx

from tests.conftest import REPO

START_S = 120   # bounds, not speed claims: a busy 2-core machine may take a while to import torch and start
# small and quick: LoRA rank 4, a checkpoint every 3 blocks, 2 requests decoded together and 2 waiting
TINY_FLAGS = ["--device", "cpu", "--num-threads", "1", "--steps", "4", "--threshold", "0.0", "--dvi-lora-r", "4",
              "--dvi-batch-size", "8", "--dvi-buffer-size", "64", "--dvi-update-every", "2", "--dvi-topk", "64",
              "--save-lora-every", "3", "--metrics-every", "100000", "--max-batch", "2", "--queue-size", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir, state_dir, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir.parent / f"{state_dir.name}-{self.port}.log"
        cmd = [sys.executable, "-m", "kangaroo_dvi.serve", "--model-id", str(model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--state-dir", str(state_dir), *TINY_FLAGS, *flags]
        self.log = open(self.log_path, "w")  # noqa: SIM115 - open while the process runs; stop() closes it
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.wait_healthy()

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"no healthy server after {START_S}s:\n{self.output()}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def metric(self, name: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and not s.labels:
                    return s.value
        raise KeyError(name)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]


def client(server: Server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


@cache
def _reference(model_dir: str):
    from kangaroo.greedy import eos_ids_of
    from kangaroo.model_loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    lm = load_causal_lm(model_dir, device="cpu", dtype="float32")
    return tok, lm, eos_ids_of(tok, lm.config)


def greedy_chat(model_dir, text: str, max_tokens: int) -> tuple[list[int], str]:
    """The baseline driver's answer to ``text`` as a question: its token ids and the decoded text."""
    from evaluation.questions import chat_prompt_ids
    from kangaroo.greedy import greedy_decode

    tok, lm, eos = _reference(str(model_dir))
    ids = chat_prompt_ids(tok, [{"role": "user", "content": text}], str(model_dir))
    out = greedy_decode(lm, ids, max_tokens, eos).tokens
    return out, tok.decode(out, skip_special_tokens=True)


def greedy_text(model_dir, prompt: str, max_tokens: int) -> tuple[list[int], str]:
    """Greedy decoding of a raw completion prompt."""
    import torch

    from kangaroo.greedy import greedy_decode

    tok, lm, eos = _reference(str(model_dir))
    out = greedy_decode(lm, torch.tensor([tok(prompt).input_ids]), max_tokens, eos).tokens
    return out, tok.decode(out, skip_special_tokens=True)
