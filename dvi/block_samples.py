"""block -> training tuples -> buffer: what one verify/commit block (and, dense, one prefill) teaches the drafter.

For a self-drafted block that drafted d_1..d_m and accepted a of them: one tuple per accepted position (reward 1)
and one for the first rejected position (reward 0, ``is_first_reject``), each with the hk that drafted it and the
verifier's logits there. A candidate the draft policy declined is pushed too when the verifier judged it for free
(all m drafts accepted: v_m judges d_{m+1}). n-gram blocks push none of these: no hk, and the token was not the
drafter head's choice (docs/dvi.md).

A token tree's block (``kangaroo/tree_accept.py``) reads as the chain of its accepted line, so the tuples above come
from the accepted path and its first rejected continuation; every other node the verifier judged and rejected (a
branch beside the path, or the drafter's first choice where a branch was accepted) adds a reject tuple of its own
(reward 0, ``is_first_reject``: the first rejection on its own branch), with the hk that proposed it and its parent's
row (``branch_samples``).

Sampled traffic (docs/dvi.md, "Sampled traffic") pushes the same tuples: the verifier's tokens are its sampled picks,
so a reward is the coupled rule's verdict (the drafted token equals the verifier's pick there) and an accepted
tuple's token (CE's target) is the committed sampled token; z_phi stays the verifier's raw logits (the KD target).

Dense supervision (``dense=True``, issue 12): every committed position j = 0..a of the verify pass that got no
tuple above also gives one, ``kd_only``: the hk of input j (the drafting loop's, or the shallow pass verify ran)
and the verifier's logits row j, for the KD terms only (CE and PG skip it: there is no drafter verdict there).
That adds row m of a fully accepted self block, every committed row of an n-gram block and of a goodput block
that skipped its probe. ``prefill_samples`` does the same for the prompt positions ``prefill`` scored.

With a trained adapter (the block or prefill carries a ``HiddenContext``) every tuple also carries its segment: the
layer-k residuals of the up to W positions ending at its input (input pos - 1 of the block; the scored prompt
position), which the trainer runs the adapter over; a dense tuple's hk is then zeros (unread: the adapter's layer
runs only where a draft needs it, ``KangarooModel.shallow_out``).

With a feature drafter (the block or prefill carries a ``FeatureContext``) every tuple also carries the feature
drafter's segment for the entry the same verifier row judges (``Block.feature_segment``): its features and tokens.
The verifier's logits at a committed row are the target of both drafters, so one tuple serves both.
"""
from __future__ import annotations

import torch

from dvi.types import DVITrainSample
from kangaroo.speculative import Block, PrefillTargets


def block_samples(blk: Block, dense: bool = False) -> list[DVITrainSample]:
    d, v, a = blk.draft, blk.verification, blk.accepted
    out = []
    if d.source == "self":
        n = a + (a < blk.drafted)
        out = [DVITrainSample(hk=d.hk_state_of(i), token=d.tokens[i - 1], z_phi=v.logits[i - 1],
                              reward=int(i <= a), pos=i, is_first_reject=i > a) for i in range(1, n + 1)]
        judged = blk.judged_declined
        if judged is not None:
            m = blk.drafted
            out.append(DVITrainSample(hk=d.declined_hk.to(torch.float16), token=d.declined_token,
                                      z_phi=v.logits[m], reward=int(judged), pos=m + 1, is_first_reject=not judged))
        out += branch_samples(blk)
    if dense:
        done = {s.pos - 1 for s in out}  # verifier rows already in a tuple
        # a trained adapter's trainer reads each tuple's segment, never its hk: none is computed for these rows
        unread = None if blk.context is None else blk.context.h.new_zeros(blk.context.h.shape[1])
        for j in range(a + 1):            # the committed rows: inputs x, d_1..d_a
            hk = None if j in done else blk.input_hk(j) if unread is None else unread
            if hk is not None:
                out.append(DVITrainSample(hk=hk.to(torch.float16), token=v.tokens[j], z_phi=v.logits[j], reward=0,
                                          pos=j + 1, is_first_reject=False, kd_only=True))
    if blk.context is not None:  # a tuple at pos i drafts from input i-1
        out = [with_segment(s, *blk.input_segment(s.pos - 1)) for s in out]
    if blk.features is not None:  # the feature drafter's entry judged by the same verifier row
        out = [with_feature_segment(s, *blk.feature_segment(s.pos - 1)) for s in out]
    return out


def branch_samples(blk: Block) -> list[DVITrainSample]:
    """A tree's judged, rejected nodes off the block's line: reject tuples at their depth (none for a chain)."""
    if blk.tree is None:
        return []
    d, tree, rows = blk.tree.draft, blk.tree.draft.tree, blk.tree.verification.logits
    return [DVITrainSample(hk=d.hk_state_of(c), token=d.tokens[c - 1], z_phi=rows[tree.parent(c)], reward=0,
                           pos=tree.depths[c], is_first_reject=True) for c in blk.tree.rejected_off_line()]


def with_segment(s: DVITrainSample, rows: torch.Tensor, first_pos: int) -> DVITrainSample:
    return s._replace(seg_h=rows, seg_pos=first_pos)


def with_feature_segment(s: DVITrainSample, f: torch.Tensor, ids: torch.Tensor, first: int) -> DVITrainSample:
    return s._replace(feat_f=f, feat_ids=ids, feat_pos=first)


def prefill_samples(t: PrefillTargets) -> list[DVITrainSample]:
    """KD-only tuples from the prompt: the hk at each scored position and the verifier's logits of the next token;
    ``token`` is the prompt's next token (no drafter verdict: CE and PG skip these rows)."""
    out = [DVITrainSample(hk=t.hk[r].to(torch.float16), token=t.next_tokens[r], z_phi=t.logits[r], reward=0, pos=0,
                          is_first_reject=False, kd_only=True) for r in range(len(t.positions))]
    if t.context is not None:
        out = [with_segment(s, *t.context.segment(p)) for s, p in zip(out, t.positions)]
    if t.features is not None:  # the row of position p judges the feature drafter's entry p - 1
        out = [with_feature_segment(s, *t.features.segment(p - 1)) for s, p in zip(out, t.positions)]
    return out


class BlockObserver:
    """Pushes every block's tuples into ``buffer``; ``debug`` prints the hk count and bytes per block.
    ``judged``/``kd_only`` count the tuples pushed of each kind."""

    def __init__(self, buffer, debug: bool = False, print_fn=print, dense: bool = False):
        self.buffer, self.debug, self.print, self.dense = buffer, debug, print_fn, dense
        self.judged = self.kd_only = 0

    def push(self, samples: list[DVITrainSample]) -> int:
        for s in samples:
            self.buffer.push(s)
            self.kd_only += int(s.kd_only)
            self.judged += int(not s.kd_only)
        return len(samples)

    def observe(self, blk: Block, block_no: int) -> int:
        n = self.push(block_samples(blk, self.dense))
        if self.debug:
            nbytes = n * self.buffer.d_model * 2
            self.print(f"[hk] block {block_no}: {n} hk captured ({nbytes} B float16); "
                       f"buffer {self.buffer.size}/{self.buffer.capacity} slots")
        return n
