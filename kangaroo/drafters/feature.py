"""The feature drafter (``--drafter feature``): EAGLE-1's drafter over the verifier's own last-layer features
(``kangaroo/feature_drafter.py``), with a KV cache of its own over its entries.

A block starting at x (position P, in no cache yet):

    catch up   the entries its cache lacks, k = c .. P-1, each (f_k, the token at k + 1) with f_k the TRUE feature
               of position k (``KangarooCaches.features``: what prefill and every verify pass computed, cropped
               with the caches), in one pass of its layer; the last one's output g_{P-1} predicts f_P
    draft      the head on g -> d_1; entry (g, d_1) -> g' -> d_2; ... while the draft policy keeps the candidates
               (chaining over its own predicted features)

A goodput policy's probe gate decides first whether a candidate can pay (learning from this drafter's first
candidates, judged by the verifier's v_0 of whatever block followed); a declined probe leaves the catch-up to the
next draft. Entries past P-1 were made from predicted features: the next block drops them (``true``: how many
entries of its cache came from true features) and catches up over the positions the verifier committed, as EAGLE
does, so a rejection needs no other rollback. The drafter runs no layer of the model and writes none of its caches
(verify runs the shallow layers on its block, as for a lookup's), so it may stand anywhere in a chain before
``self``. It catches up whoever drafted the blocks in between: the log holds every committed position's feature.
"""
from __future__ import annotations

import torch

from kangaroo.blocks import Draft
from kangaroo.draft_policy import DraftPolicy, ThresholdStop
from kangaroo.drafters.base import Drafter
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.packed_head import propose
from kangaroo.timing import now

NAME = "feature"


class FeatureDrafter(Drafter):
    name = NAME

    def __init__(self, steps: int = 6, policy: DraftPolicy | None = None):
        super().__init__(steps, policy if policy is not None else ThresholdStop(0.6))
        self.cache = None   # its own KV cache (one layer) over its entries
        self.true = 0       # entries at the start of that cache made from true features
        self.candidate = None  # this block's first candidate (kept or declined), for the probe gate

    def begin(self, prompt: list[int]) -> None:
        self.true = 0

    def observe(self, block) -> None:
        """As every drafter; and a probe gate (``kangaroo/probe_gate.py``) learns whether this block's first
        candidate was the verifier's token (the self-drafter's gate learns from ``Block.top1_agree``)."""
        super().observe(block)
        gate = getattr(self.policy, "gate", None)
        if gate is not None and self.candidate is not None:
            gate.learn(self.candidate == block.verification.tokens[0])
        self.candidate = None

    def _own_cache(self, fd, need: int):
        if self.cache is None or self.cache.max_len < need or self.cache.k.dtype != fd.dtype:
            self.cache = fd.new_cache(max(need, 256) * 2)
            self.true = 0
        return self.cache

    @torch.no_grad()
    def draft(self, model: KangarooModel, caches: KangarooCaches, history: list[int]) -> Draft:
        t0 = now(model.device)
        fd, log, x, P = model.feature_drafter, caches.features, history[-1], len(history) - 1
        if fd is None or log is None:
            raise ValueError("the feature drafter needs a model with a feature drafter attached before its caches "
                             "were made (kangaroo.feature_drafter.attach_feature_drafter)")
        if log.length != P:
            raise ValueError(f"the feature log holds {log.length} positions, the history {P} before x")
        if P == 0 or not self.policy.probe(NAME):  # no feature before x, or a candidate would not pay now
            return Draft([], None, None, [], source=NAME, last_token=x)
        cache = self._own_cache(fd, P + self.steps + 1)
        cache.crop(min(self.true, P - 1, cache.length))
        c = cache.length
        g = fd.step(log.f[c:P], torch.tensor(history[c + 1:P + 1]), cache)
        self.true = P
        tokens, confs, declined = [], [], (None, None)
        while True:
            best = propose(fd, g)
            conf, tok = best.probs[0], model.drafter_token_id(best.columns[0])
            self.candidate = tok if not tokens else self.candidate
            keep, go_on = self.policy.decide(confs + [conf], NAME)
            if not keep:
                declined = (tok, conf)
                break
            tokens.append(tok)
            confs.append(conf)
            if not go_on or len(tokens) == self.steps:
                break
            g = fd.step(g, torch.tensor([tok]), cache)
        return Draft(tokens, None, None, confs, ms=(now(model.device) - t0) * 1e3, source=NAME, last_token=x,
                     declined_token=declined[0], declined_conf=declined[1])
