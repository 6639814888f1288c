"""The drafter seam: who proposes the tokens a block verifies. One interface, three drafters (llama.cpp's
speculative example style: a draft model and a model-free n-gram drafter side by side, the cheap one first).

    begin(prompt)                  a new sequence starts (token ids of the prompt)
    draft(model, caches, history)  -> Draft; history[-1] is x, the last committed token, in no cache yet
    observe(block)                 what the verifier made of the last draft (policies calibrate from it)
    trainable_params(model)        what DVI may train (only the self-drafter has any: the LoRA head, and a
                                   trained adapter)
    metadata()                     settings, for checkpoints and run records

  SelfDrafter    shallow layers + the drafter head (identity, pruned or LoRA), today's Kangaroo drafter; the
                 draft carries layer-k hidden states and hk, so verify runs only the deep layers.
  NGramDrafter   prompt lookup over prompt + generated tokens (HF ``prompt_lookup_num_tokens``): the longest
                 n-gram (n from ngram_max down to ngram_min) ending the history that occurred before; its most
                 recent earlier occurrence's continuation is the draft. No hidden states: verify runs the shallow
                 layers on the block itself.
  HybridDrafter  the n-gram drafter when it finds (and its policy keeps) a match, else the self-drafter.

Every drafter's block goes through the same verify/accept, so every one is lossless. DVI learns only from
self-drafted blocks (``Draft.source == "self"``): see docs/dvi.md.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

from kangaroo.blocks import Block, Draft
from kangaroo.draft_policy import ThresholdStop
from kangaroo.self_draft import self_draft

DRAFTERS = ("self", "ngram", "hybrid")


class Drafter(ABC):
    name = "drafter"
    steps: int

    def begin(self, prompt: list[int]) -> None:
        pass

    @abstractmethod
    def draft(self, model, caches, history: list[int]) -> Draft: ...

    def observe(self, block: Block) -> None:
        pass

    def trainable_params(self, model) -> list:
        return []

    def metadata(self) -> dict:
        return {"drafter": self.name, "steps": self.steps}


class SelfDrafter(Drafter):
    name = "self"

    def __init__(self, steps: int = 6, policy=None):
        self.steps, self.policy = steps, policy or ThresholdStop(0.6)

    def draft(self, model, caches, history: list[int]) -> Draft:
        if not self.policy.probe("self"):  # not worth a head projection now: a plain greedy step
            return Draft([], None, None, [], source="self", last_token=history[-1])
        return self_draft(model, history[-1], caches, self.steps, self.policy)

    def observe(self, block: Block) -> None:
        note = getattr(self.policy, "note", None)  # every block: what a probe gate knows before the next probe
        if note is not None:
            note(block)
        if block.draft.source == "self":
            self.policy.observe(block)

    def trainable_params(self, model) -> list:
        from kangaroo.drafter_head import trainable_params

        return trainable_params(model)

    def metadata(self) -> dict:
        return {**super().metadata(), "policy": self.policy.name}

    def counters(self) -> dict:
        """The policy's probe counters (a probe gate: probes, declined for free, explored, paid)."""
        return getattr(self.policy, "counters", dict)()


class NGramIndex:
    """For each n, the latest end position e of every n-gram history[e-n:e] that has a continuation (e < len).
    Extended incrementally as the history grows (the history only ever grows by commits)."""

    def __init__(self, ngram_min: int, ngram_max: int):
        self.sizes = range(ngram_min, ngram_max + 1)
        self.ends: dict[int, dict[tuple, int]] = {n: {} for n in self.sizes}
        self.upto = 0  # end positions 1..upto are indexed

    def extend(self, history: list[int]) -> None:
        for e in range(self.upto + 1, len(history)):
            for n in self.sizes:
                if e >= n:
                    self.ends[n][tuple(history[e - n:e])] = e
        self.upto = max(self.upto, len(history) - 1)

    def lookup(self, history: list[int], k: int) -> tuple[list[int], int]:
        """Up to k tokens continuing the longest matched suffix n-gram, and that n (0: no match)."""
        self.extend(history)
        for n in reversed(self.sizes):
            if len(history) < n:
                continue
            e = self.ends[n].get(tuple(history[-n:]))
            if e is not None:
                return history[e:e + k], n
        return [], 0


class NGramDrafter(Drafter):
    """Prompt lookup. The policy sees confidence 1.0 for every n-gram token; the goodput policy's calibrator
    turns that into the observed acceptance rate of n-gram drafts."""

    name = "ngram"

    def __init__(self, steps: int = 6, ngram_min: int = 1, ngram_max: int = 3, policy=None):
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {ngram_min}, {ngram_max}")
        self.steps, self.ngram_min, self.ngram_max = steps, ngram_min, ngram_max
        self.policy = policy or ThresholdStop(0.0)
        self.index = NGramIndex(ngram_min, ngram_max)

    def begin(self, prompt: list[int]) -> None:
        self.index = NGramIndex(self.ngram_min, self.ngram_max)

    def propose(self, history: list[int]) -> Draft:
        t0 = time.perf_counter()
        cand, _ = self.index.lookup(history, self.steps)
        tokens, confs, declined = [], [], None
        for tok in cand:
            keep, go_on = self.policy.decide(confs + [1.0], "ngram")
            if not keep:
                declined = tok  # judged for free when the block's tokens before it are all accepted
                break
            tokens.append(tok)
            confs.append(1.0)
            if not go_on:
                break
        return Draft(tokens, None, None, confs, ms=(time.perf_counter() - t0) * 1e3, source="ngram",
                     last_token=history[-1], declined_token=declined, declined_conf=None if declined is None else 1.0)

    def draft(self, model, caches, history: list[int]) -> Draft:
        return self.propose(history)

    def observe(self, block: Block) -> None:
        if block.draft.source == "ngram":
            self.policy.observe(block)

    def metadata(self) -> dict:
        return {**super().metadata(), "ngram_min": self.ngram_min, "ngram_max": self.ngram_max,
                "policy": self.policy.name}


class HybridDrafter(Drafter):
    """The n-gram drafter first (free); the self-drafter when it proposes nothing."""

    name = "hybrid"

    def __init__(self, ngram: NGramDrafter, selfd: SelfDrafter):
        self.ngram, self.selfd = ngram, selfd
        self.steps = max(ngram.steps, selfd.steps)

    def begin(self, prompt: list[int]) -> None:
        self.ngram.begin(prompt)
        self.selfd.begin(prompt)
        self._pending = None

    def draft(self, model, caches, history: list[int]) -> Draft:
        d = self.ngram.propose(history)
        self._pending = None
        if d.tokens:
            return d
        self._pending = d.declined_token  # a match the policy declined: v_0 of the self block judges it
        s = self.selfd.draft(model, caches, history)
        s.ms += d.ms
        return s

    def observe(self, block: Block) -> None:
        self.ngram.observe(block)
        self.selfd.observe(block)
        if getattr(self, "_pending", None) is not None:
            self.ngram.policy.observe_candidate(1.0, self._pending == block.verification.tokens[0], "ngram")
            self._pending = None

    def trainable_params(self, model) -> list:
        return self.selfd.trainable_params(model)

    def counters(self) -> dict:
        return self.selfd.counters()

    def metadata(self) -> dict:
        return {**super().metadata(), "ngram": self.ngram.metadata(), "self": self.selfd.metadata()}


def make_drafter(kind: str, steps: int, policy_factory, ngram_min: int = 1, ngram_max: int = 3) -> Drafter:
    """``policy_factory()`` builds one policy per drafter (the n-gram and self parts calibrate apart)."""
    if kind == "self":
        return SelfDrafter(steps, policy_factory())
    if kind == "ngram":
        return NGramDrafter(steps, ngram_min, ngram_max, policy_factory())
    if kind == "hybrid":
        return HybridDrafter(NGramDrafter(steps, ngram_min, ngram_max, policy_factory()),
                             SelfDrafter(steps, policy_factory()))
    raise ValueError(f"unknown drafter {kind!r}: use one of {', '.join(DRAFTERS)}")
