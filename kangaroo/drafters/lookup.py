"""Model-free drafters: a lookup proposes candidate tokens with confidences, and the draft policy keeps them one by
one (the n-gram drafter over the sequence itself, the memory drafter over earlier outputs). Their drafts carry no
hidden states: verify runs the shallow layers on the block itself.

A lookup's confidence carries the evidence behind each candidate (``match_confidence``): the length of the
matched suffix and, where the lookup counts occurrences, how often the candidate followed it. The goodput
policy's calibrator bins by confidence per source, so a 3-token match and a 1-token match are judged apart.
"""
from __future__ import annotations

import time
from abc import abstractmethod

from kangaroo.blocks import Draft
from kangaroo.drafters.base import Drafter
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel


def match_confidence(match: int, hits: int = 1, total: int = 1) -> float:
    """Confidence of a candidate that followed the matched ``match`` tokens in ``hits`` of the ``total``
    occurrences looked at: (1 - 2^-match) * hits / total (a 1-token match 0.5, 2: 0.75, 3: 0.875, ...)."""
    return (1.0 - 0.5 ** match) * hits / total


class LookupDrafter(Drafter):
    @abstractmethod
    def lookup(self, history: list[int]) -> tuple[list[int], list[float]]:
        """Up to ``steps`` candidate tokens continuing ``history``, and the confidence of each."""

    def draft(self, model: KangarooModel, caches: KangarooCaches, history: list[int]) -> Draft:
        t0 = time.perf_counter()
        candidates, confidences = self.lookup(history)
        tokens, kept, declined = [], [], (None, None)
        for tok, conf in zip(candidates, confidences):
            keep, go_on = self.policy.decide(kept + [conf], self.name)
            if not keep:
                declined = (tok, conf)  # judged for free when the block's tokens before it are all accepted
                break
            tokens.append(tok)
            kept.append(conf)
            if not go_on:
                break
        return Draft(tokens, None, None, kept, ms=(time.perf_counter() - t0) * 1e3, source=self.name,
                     last_token=history[-1], declined_token=declined[0], declined_conf=declined[1])
