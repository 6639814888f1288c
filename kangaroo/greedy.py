"""Vanilla decoding with a KV cache, greedy or sampled (``kangaroo/sampling.py``): the reference every lossless
method must reproduce."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kangaroo.llama_forward import final_norm, new_cache, project, run_layers
from kangaroo.sampling import GREEDY, SamplingParams, pick_rows


@dataclass
class DecodeResult:
    tokens: list[int]                                         # new tokens (EOS included when produced)
    accept_lengths: list[int] = field(default_factory=list)   # tokens committed per forward of the verifier
    drafter_ms: float = 0.0
    verifier_ms: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.accept_lengths)


def clip_at_stop(tokens: list[int], eos_ids: set[int], budget: int) -> tuple[list[int], bool]:
    """Cut ``tokens`` after the first EOS or at ``budget`` tokens; say whether decoding must stop."""
    for i, t in enumerate(tokens[:budget]):
        if t in eos_ids:
            return tokens[:i + 1], True
    return tokens[:budget], len(tokens) >= budget


def eos_ids_of(tokenizer, config=None) -> set[int]:
    ids = set()
    for src in (getattr(tokenizer, "eos_token_id", None), getattr(config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    return ids


@torch.no_grad()
def greedy_decode(lm, input_ids: torch.Tensor, max_new_tokens: int, eos_ids: set[int],
                  cache_pool=None, sampling: SamplingParams = GREEDY) -> DecodeResult:
    """``lm`` is a Hugging Face Llama causal LM; ``input_ids`` [1, n]. The prompt but its last token is
    prefilled in one pass, then every token (the prompt's last one first) is one step: the same split as
    ``kangaroo.speculative.prefill``, so both compute each committed position the same way. ``cache_pool``
    (``ReusableCaches(greedy_cache_factory(lm))``) lends a cache kept across calls; else a new one. ``sampling``:
    each token is ``pick_rows`` at its position (the prompt's length for the first); greedy by default."""
    body = lm.model
    need = input_ids.shape[1] + max_new_tokens + 1
    cache = cache_pool.get(need) if cache_pool is not None else new_cache(lm.config, len(body.layers), need,
                                                                          lm.dtype, input_ids.device)
    if input_ids.shape[1] > 1:
        run_layers(body.layers, body.embed_tokens(input_ids[:, :-1]), cache, body.rotary_emb)
    x = input_ids[:, -1:]
    out: list[int] = []
    while True:
        h = run_layers(body.layers, body.embed_tokens(x), cache, body.rotary_emb)
        tok = pick_rows(project(final_norm(body.norm, h[:, -1]), lm.lm_head.weight), input_ids.shape[1] + len(out),
                        sampling)[0]
        out.append(tok)
        out, stop = clip_at_stop(out, eos_ids, max_new_tokens)
        if stop:
            return DecodeResult(out, [1] * len(out))
        x = input_ids.new_tensor([[tok]])
