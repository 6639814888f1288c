"""Kangaroo greedy self-speculative decoding as three named phases: draft, verify, accept.

One block, starting from the last committed token x at position P (not yet seen by any layer):

  draft   shallow(x) -> hk_0 -> d_1; shallow(d_1) -> hk_1 -> d_2; ... until ``steps`` tokens are drafted or
          the drafter's top-1 probability of the token just drafted is under ``threshold`` (that token is
          still verified). The shallow hidden states of x, d_1..d_m are kept for the verifier.
  verify  deep layers on those m+1 hidden states in one pass -> verifier tokens v_0..v_m (v_j follows
          the j-th input).
  accept  a = longest prefix with d_{j+1} == v_j; commit d_1..d_a and v_a (the verifier's own token).
          Both caches are cropped to P + 1 + a: what the rejected drafts wrote is dropped.

Every committed token is the verifier's greedy choice, so the output equals greedy decoding of the base model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from kangaroo.greedy import DecodeResult, clip_at_stop
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class Draft:
    tokens: list[int]          # d_1..d_m
    h: torch.Tensor            # [1, m+1, d] layer-k hidden of x, d_1..d_m: the verifier's input
    hk: torch.Tensor           # [m, d] drafter features that produced d_1..d_m
    confidences: list[float]   # drafter top-1 probability of each d_i
    ms: float = 0.0

    def hk_state_of(self, i: int) -> torch.Tensor:
        """The post-norm layer-k features the drafter head projected to draft d_i (1-based), float16 [d]."""
        return self.hk[i - 1].to(torch.float16)


@dataclass
class Verification:
    logits: torch.Tensor       # [m+1, V] verifier logits; row j predicts the token after input j
    tokens: list[int]          # v_0..v_m (greedy)
    ms: float = 0.0


@dataclass
class Block:
    draft: Draft
    verification: Verification
    accepted: int              # a: drafted tokens accepted
    committed: list[int]       # d_1..d_a, v_a

    @property
    def drafted(self) -> int:
        return len(self.draft.tokens)


@torch.no_grad()
def draft(model: KangarooModel, last_token: int, caches: KangarooCaches, steps: int, threshold: float) -> Draft:
    t0 = _now(model.device)
    x = torch.tensor([[last_token]], device=model.device)
    out = model.forward_shallow(x, caches.shallow)
    hs, hks, tokens, confs = [out.h], [], [], []
    for _ in range(steps):
        hk = out.hk[:, -1]
        probs = torch.softmax(model.drafter_logits_from_hk(hk), dim=-1)
        conf, tok = probs.max(dim=-1)
        tokens.append(int(tok))
        confs.append(float(conf))
        hks.append(hk)
        out = model.forward_shallow(tok.view(1, 1), caches.shallow)
        hs.append(out.h)
        if confs[-1] < threshold:
            break
    return Draft(tokens, torch.cat(hs, dim=1), torch.cat(hks, dim=0), confs, ms=(_now(model.device) - t0) * 1e3)


@torch.no_grad()
def verify(model: KangarooModel, d: Draft, caches: KangarooCaches) -> Verification:
    t0 = _now(model.device)
    logits = model.verifier_logits(model.forward_deep(d.h, caches.deep))[0]
    tokens = logits.argmax(dim=-1).tolist()
    return Verification(logits, tokens, ms=(_now(model.device) - t0) * 1e3)


def accept(d: Draft, v: Verification) -> tuple[int, list[int]]:
    a = 0
    while a < len(d.tokens) and d.tokens[a] == v.tokens[a]:
        a += 1
    return a, d.tokens[:a] + [v.tokens[a]]


def speculative_step(model: KangarooModel, last_token: int, caches: KangarooCaches, steps: int,
                     threshold: float) -> Block:
    start = caches.shallow.length
    d = draft(model, last_token, caches, steps, threshold)
    v = verify(model, d, caches)
    a, committed = accept(d, v)
    caches.crop(start + 1 + a)
    return Block(d, v, a, committed)


@torch.no_grad()
def prefill(model: KangarooModel, input_ids: torch.Tensor, caches: KangarooCaches) -> int:
    """Run the prompt but its last token through both halves; return that last token."""
    if input_ids.shape[1] > 1:
        model.forward_deep(model.forward_shallow(input_ids[:, :-1], caches.shallow).h, caches.deep)
    return int(input_ids[0, -1])


def kangaroo_generate(model: KangarooModel, input_ids: torch.Tensor, max_new_tokens: int, eos_ids: set[int],
                      steps: int = 6, threshold: float = 0.6,
                      on_block: Optional[Callable[[Block], None]] = None, cache_pool=None) -> DecodeResult:
    """Greedy decoding of ``input_ids`` [1, n]; ``on_block`` sees every block (DVI learns from it).
    ``cache_pool`` (a ``kangaroo.cache_pool.ReusableCaches``) lends caches kept across calls; else new ones."""
    need = input_ids.shape[1] + max_new_tokens + steps + 1
    caches = cache_pool.get(need) if cache_pool is not None else model.new_caches(need)
    last = prefill(model, input_ids, caches)
    res = DecodeResult(tokens=[])
    while True:
        blk = speculative_step(model, last, caches, steps, threshold)
        res.drafter_ms += blk.draft.ms
        res.verifier_ms += blk.verification.ms
        if on_block is not None:
            on_block(blk)
        n_before = len(res.tokens)
        res.tokens, stop = clip_at_stop(res.tokens + blk.committed, eos_ids, max_new_tokens)
        res.accept_lengths.append(len(res.tokens) - n_before)
        if stop:
            return res
        last = res.tokens[-1]
