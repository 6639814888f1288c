"""Model-free drafters: a lookup proposes candidate tokens with confidences, and the draft policy keeps them one by
one (the n-gram drafter over the sequence itself, the memory drafter over earlier outputs). Their drafts carry no
hidden states: verify runs the shallow layers on the block itself.

A lookup's confidence carries the evidence behind each candidate (``match_confidence``): the length of the
matched suffix and, where the lookup counts occurrences, how often the candidate followed it. The goodput
policy's calibrator bins by confidence per source, so a 3-token match and a 1-token match are judged apart.

With ``width`` > 1 a lookup proposes several continuations (``lookup_tree``: a trie of ``Candidate`` tokens, each
parent's first child its best continuation; SuffixDecoding's speculation trees): the main line joins token by token
as a chain's, then the other candidates, best path confidence first, where the policy's pay rule says they pay
(``kangaroo/tree_growth.py``).
"""
from __future__ import annotations

import time
from abc import abstractmethod
from typing import NamedTuple

from kangaroo.blocks import Draft
from kangaroo.drafters.base import Drafter
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.tree_growth import TreeGrowth


class Candidate(NamedTuple):
    token: int
    parent: int      # the candidate it follows (an index in the list, before it), -1: x
    conf: float


def trie(chains: list[tuple[list[int], list[float]]]) -> list[Candidate]:
    """Continuations (tokens, confidences), best first, merged into a trie: a shared prefix is one path (with the
    confidence of the first continuation that made it), and each node's first child is the best one's."""
    out: list[Candidate] = []
    at: dict[tuple[int, int], int] = {}   # (parent, token) -> candidate
    for tokens, confs in chains:
        parent = -1
        for tok, conf in zip(tokens, confs):
            if (parent, tok) not in at:
                at[parent, tok] = len(out)
                out.append(Candidate(tok, parent, conf))
            parent = at[parent, tok]
    return out


def match_confidence(match: int, hits: int = 1, total: int = 1) -> float:
    """Confidence of a candidate that followed the matched ``match`` tokens in ``hits`` of the ``total``
    occurrences looked at: (1 - 2^-match) * hits / total (a 1-token match 0.5, 2: 0.75, 3: 0.875, ...)."""
    return (1.0 - 0.5 ** match) * hits / total


class LookupDrafter(Drafter):
    @abstractmethod
    def lookup(self, history: list[int]) -> tuple[list[int], list[float]]:
        """Up to ``steps`` candidate tokens continuing ``history``, and the confidence of each."""

    def lookup_tree(self, history: list[int]) -> list[Candidate]:
        """Candidate continuations as a trie (``trie``); by default ``lookup``'s one continuation."""
        return trie([self.lookup(history)])

    def draft(self, model: KangarooModel, caches: KangarooCaches, history: list[int]) -> Draft:
        t0 = time.perf_counter()
        if self.width > 1:
            return self._draft_tree(history, t0)
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

    def _draft_tree(self, history: list[int], t0: float) -> Draft:
        cands = self.lookup_tree(history)
        grow = TreeGrowth(self.policy, self.name, self.width, self.steps)
        node_of, declined, c = {-1: 0}, (None, None), _first_child(cands, -1)
        while c is not None and not grow.full:   # the main line, as a chain's draft
            keep, go_on = grow.decide(cands[c].conf)
            if not keep:
                declined = (cands[c].token, cands[c].conf)
                break
            node_of[c] = grow.add_main(cands[c].token, cands[c].conf, node_of[cands[c].parent])
            c = _first_child(cands, c) if go_on else None
        main = set(node_of)
        for c in sorted(range(len(cands)), key=lambda i: -_path_conf(cands, i)) if grow.size else []:
            cand = cands[c]
            if c not in main and cand.parent in node_of and _off_main(cands, c, main):
                node = grow.branch(cand.token, cand.conf, node_of[cand.parent])
                if node is not None:
                    node_of[c] = node
        return Draft(grow.tokens, None, None, grow.confs, ms=(time.perf_counter() - t0) * 1e3, source=self.name,
                     last_token=history[-1], declined_token=declined[0], declined_conf=declined[1], tree=grow.tree)


def _first_child(cands: list[Candidate], parent: int):
    return next((i for i, c in enumerate(cands) if c.parent == parent), None)


def _path_conf(cands: list[Candidate], i: int) -> float:
    p = 1.0
    while i >= 0:
        p *= cands[i].conf
        i = cands[i].parent
    return p


def _off_main(cands: list[Candidate], i: int, main: set[int]) -> bool:
    """Whether candidate i is not its main-line parent's first child (those the main line declined stay out)."""
    parent = cands[i].parent
    return parent not in main or _first_child(cands, parent) != i
