"""An ordered chain of drafters, cheap first (llama.cpp ``common/speculative.h``): each block asks them in order,
and the first whose draft keeps at least one token wins the block. A drafter that came up empty may still have
had a first candidate its policy declined: the verifier's v_0 of the block judges it for free, and its policy
keeps calibrating. When no drafter keeps a token the last one's empty draft makes the block a plain greedy step
(with a self-drafter last, its declined candidate still teaches DVI).

The chain keeps every drafter's ``DrafterCounters`` (``by_source``: name -> counters, ``none`` for the greedy
steps) from the blocks it observes; the draft of a block records whom it asked and for how long (``tried_ms``).
A drafter that runs the model (the self-drafter writes the shallow cache) must come last.
"""
from __future__ import annotations

from kangaroo.blocks import NONE, Block, Draft
from kangaroo.drafters.base import Drafter
from kangaroo.drafters.counters import DrafterCounters, tally
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel

NAMES = ("ngram", "memory", "feature", "self")
ALIASES = {"hybrid": "ngram,self"}


def chain_names(spec: str) -> list[str]:
    """A --drafter value (one name, an alias, or a comma-separated chain) -> the drafter names in order."""
    names = [s.strip() for s in ALIASES.get(spec, spec).split(",") if s.strip()]
    bad = [n for n in names if n not in NAMES]
    if not names or bad:
        raise ValueError(f"unknown drafter {', '.join(bad) or repr(spec)}: use one of {', '.join(NAMES)}, "
                         f"{', '.join(ALIASES)}, or a chain of them such as ngram,memory,self")
    if len(set(names)) < len(names):
        raise ValueError(f"drafter chain {spec!r} names a drafter twice: name each once")
    if "self" in names[:-1]:
        raise ValueError(f"drafter chain {spec!r}: self drafts through the model's layers, so it must come last")
    return names


class DrafterChain(Drafter):
    def __init__(self, drafters: list[Drafter]):  # no policy of its own: each drafter has one
        if not drafters or len({d.name for d in drafters}) < len(drafters):
            raise ValueError("a drafter chain needs at least one drafter, each once")
        if any(d.runs_model for d in drafters[:-1]):
            raise ValueError("a drafter that runs the model must come last in a chain")
        self.drafters = list(drafters)
        self.name = ",".join(d.name for d in drafters)
        self.steps = max(d.steps for d in drafters)
        self.width = max(d.width for d in drafters)
        self.runs_model = drafters[-1].runs_model
        self.policy = None   # each drafter has its own
        # no counters of its own either: its drafters' (the same objects) and the greedy steps', by source
        self.by_source = {d.name: d.counters for d in drafters} | {NONE: DrafterCounters()}
        self._declined: list[tuple[Drafter, int, float]] = []   # this block's declined first candidates

    def sample_with(self, params) -> None:
        self.sampling = params
        for d in self.drafters:
            d.sample_with(params)

    def begin(self, prompt: list[int]) -> None:
        self._declined = []
        for d in self.drafters:
            d.begin(prompt)

    def draft(self, model: KangarooModel, caches: KangarooCaches, history: list[int]) -> Draft:
        self._declined, tried = [], {}
        for drafter in self.drafters:
            d = drafter.draft(model, caches, history)
            tried[drafter.name] = d.ms
            if d.tokens or drafter is self.drafters[-1]:
                break
            if d.declined_token is not None:
                self._declined.append((drafter, d.declined_token, d.declined_conf))
        d.ms, d.tried_ms = sum(tried.values()), tried
        return d

    def observe(self, block: Block) -> None:
        for d in self.drafters:
            d.observe(block)
        for d, token, conf in self._declined:
            d.observe_declined(token, conf, block.verification.tokens[0])
        self._declined = []
        tally(self.by_source, block.source, block.asked_ms, block.drafted, block.accepted,
              len(block.committed), block.verification.ms)

    def end(self, output: list[int]) -> None:
        for d in self.drafters:
            d.end(output)

    def trainable_params(self, model: KangarooModel) -> list:
        return [p for d in self.drafters for p in d.trainable_params(model)]

    def metadata(self) -> dict:
        return {"drafter": self.name, "steps": self.steps, "chain": [d.metadata() for d in self.drafters]}
