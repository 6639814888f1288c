"""What one speculative block is made of: the ``Draft`` a drafter proposes, the verifier's ``Verification`` of it,
and the ``Block`` that records both and what was accepted and committed (``kangaroo/speculative.py`` makes
them, ``kangaroo/drafters.py`` drafts them, DVI learns from them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Draft:
    tokens: list[int]                # d_1..d_m (m may be 0)
    h: Optional[torch.Tensor]        # [1, c, d] layer-k hidden of the first c of x, d_1..d_m (c = m+1 for the
                                     # self-drafter, 0 / None for an n-gram draft): verify runs the rest
    hk: Optional[torch.Tensor]       # [m, d] drafter features that produced d_1..d_m (self-drafted only, else None)
    confidences: list[float]         # drafter top-1 probability (or estimated acceptance) of each d_i
    ms: float = 0.0
    source: str = "self"             # who drafted: "self" (shallow layers + head) or "ngram" (prompt lookup)
    last_token: Optional[int] = None  # x: needed by verify when h does not cover it
    # the candidate d_{m+1} the policy declined (self-drafter): when d_1..d_m are all accepted, the verifier's
    # token v_m judges it for free, so calibration and DVI still learn from blocks that draft nothing
    declined_token: Optional[int] = None
    declined_conf: Optional[float] = None
    declined_hk: Optional[torch.Tensor] = None   # [d]

    @property
    def covered(self) -> int:
        """Inputs (x, d_1, ...) whose layer-k hidden states this draft already holds."""
        return 0 if self.h is None else self.h.shape[1]

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

    @property
    def judged_declined(self) -> Optional[bool]:
        """Whether the verifier agreed with the declined candidate (None: none, or not judged)."""
        d = self.draft
        if d.declined_token is None or self.accepted < self.drafted:
            return None
        return d.declined_token == self.verification.tokens[self.drafted]
