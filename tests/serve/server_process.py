"""A real server process for the tests: ``python -m kangaroo_dvi.serve`` on 127.0.0.1 and a free port, a tiny model
folder, its log in a file; and the reference its answers must equal (greedy decoding, or plain sampling with the same
params and seed)."""
from __future__ import annotations

import time
from functools import cache

from scripts.serve_load.server import ServerProcess

START_S = 120   # a bound, not a speed claim: a busy 2-core machine may take a while to import torch and start
# small and quick: LoRA rank 4, a checkpoint every 3 blocks, 2 requests decoded together and 2 waiting
TINY_FLAGS = ["--device", "cpu", "--num-threads", "1", "--steps", "4", "--threshold", "0.0", "--dvi-lora-r", "4",
              "--dvi-batch-size", "8", "--dvi-buffer-size", "64", "--dvi-update-every", "2", "--dvi-topk", "64",
              "--save-lora-every", "3", "--metrics-every", "100000", "--max-batch", "2", "--queue-size", "2"]


class Server(ServerProcess):
    """The tiny model served with ``TINY_FLAGS`` (+ ``flags``; ``api_key``: ``--api-key`` it); its log next to the
    state folder."""

    def __init__(self, model_dir, state_dir, *flags: str, api_key: str = ""):
        log = state_dir.parent / f"{state_dir.name}-{time.monotonic_ns()}.log"
        key_flags = ["--api-key", api_key] if api_key else []
        super().__init__(str(model_dir), state_dir, log, [*TINY_FLAGS, *key_flags, *flags], start_s=START_S,
                         api_key=api_key)
        self.api_key, self.state_dir = api_key, state_dir


def client(server: Server, api_key: str | None = None):
    """The official client of ``server``, with its key (``api_key``: another one)."""
    import openai

    key = api_key if api_key is not None else server.api_key or "unused"
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


@cache
def _reference(model_dir: str):
    from kangaroo.greedy import eos_ids_of
    from kangaroo.model_loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    lm = load_causal_lm(model_dir, device="cpu", dtype="float32")
    return tok, lm, eos_ids_of(tok, lm.config)


def greedy_chat(model_dir, text: str, max_tokens: int, sampling=None) -> tuple[list[int], str]:
    """The baseline driver's answer to ``text`` as a question: its token ids and the decoded text; greedy, or plain
    sampling under ``sampling`` (a ``SamplingParams``, as the driver's --temperature/--top-p/--top-k/--seed)."""
    from kangaroo.chat import chat_prompt_ids

    tok = _reference(str(model_dir))[0]
    return _decode(model_dir, chat_prompt_ids(tok, [{"role": "user", "content": text}], str(model_dir)), max_tokens,
                   sampling)


def greedy_text(model_dir, prompt: str, max_tokens: int, sampling=None) -> tuple[list[int], str]:
    """Greedy decoding (or plain sampling under ``sampling``) of a raw completion prompt."""
    import torch

    tok = _reference(str(model_dir))[0]
    return _decode(model_dir, torch.tensor([tok(prompt).input_ids]), max_tokens, sampling)


def _decode(model_dir, ids, max_tokens: int, sampling) -> tuple[list[int], str]:
    from kangaroo.greedy import greedy_decode
    from kangaroo.sampling import GREEDY

    tok, lm, eos = _reference(str(model_dir))
    out = greedy_decode(lm, ids, max_tokens, eos, sampling=sampling or GREEDY).tokens
    return out, tok.decode(out, skip_special_tokens=True)
