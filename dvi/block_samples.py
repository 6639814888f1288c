"""block -> training tuples -> buffer: what one verify/commit block teaches the drafter.

For a self-drafted block that drafted d_1..d_m and accepted a of them: one tuple per accepted position (reward 1)
and one for the first rejected position (reward 0, ``is_first_reject``), each with the hk that drafted it and the
verifier's logits there. A candidate the draft policy declined is pushed too when the verifier judged it for free
(all m drafts accepted: v_m judges d_{m+1}). n-gram blocks push nothing: no hk, and the token was not the drafter
head's choice (docs/dvi.md).
"""
from __future__ import annotations

import torch

from dvi.types import DVITrainSample
from kangaroo.speculative import Block


def block_samples(blk: Block) -> list[DVITrainSample]:
    d, v, a = blk.draft, blk.verification, blk.accepted
    if d.source != "self":
        return []
    n = a + (a < blk.drafted)
    out = [DVITrainSample(hk=d.hk_state_of(i), token=d.tokens[i - 1], z_phi=v.logits[i - 1], reward=int(i <= a),
                          pos=i, is_first_reject=i > a) for i in range(1, n + 1)]
    judged = blk.judged_declined
    if judged is not None:
        m = blk.drafted
        out.append(DVITrainSample(hk=d.declined_hk.to(torch.float16), token=d.declined_token, z_phi=v.logits[m],
                                  reward=int(judged), pos=m + 1, is_first_reject=not judged))
    return out


class BlockObserver:
    """Pushes every block's tuples into ``buffer``; ``debug`` prints the hk count and bytes per block."""

    def __init__(self, buffer, debug: bool = False, print_fn=print):
        self.buffer, self.debug, self.print = buffer, debug, print_fn

    def observe(self, blk: Block, block_no: int) -> int:
        samples = block_samples(blk)
        for s in samples:
            self.buffer.push(s)
        if self.debug:
            nbytes = len(samples) * self.buffer.d_model * 2
            self.print(f"[hk] block {block_no}: {len(samples)} hk captured ({nbytes} B float16); "
                       f"buffer {self.buffer.size}/{self.buffer.capacity} slots")
        return len(samples)
