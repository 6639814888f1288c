"""Training positions captured offline with the frozen verifier, as DVI's online loop would push them: the data of a
warm start (``dvi/warm_start.py``) and of the feature drafter's offline ceiling
(``scripts/experiments/ceiling/feature_ceiling.py``).

One sequence: ``ids`` (prompt + answer, int32), ``n`` (the prompt's length), ``f`` [T, d] float16 (the verifier's
post-norm last-layer state at each position, as ``Verification.features`` holds it), the scored positions ``pos`` and
the verifier's top-K logits there (``top_idx``, ``top_val``). Position p's row predicts the token at p + 1; the
feature drafter's entry p - 1 = (f_{p-1}, ids[p]) is judged by it. ``make_batch`` hands tuples to the trainer as the
buffer would (each entry's segment of the window's TRUE features, right-aligned; KD-only).
"""
from __future__ import annotations

import torch

from dvi.types import Batch
from kangaroo.speculative import pick_prefill_positions


def scored_positions(n: int, answer: int, prefill: int) -> list[int]:
    """The rows DVI's online loop pushes for a prompt of n tokens and an answer of ``answer``: ``prefill`` of the
    prefill's (positions 0..n-2) and every committed answer row (positions n-1 .. n+answer-2)."""
    return pick_prefill_positions(n - 1, prefill) + list(range(n - 1, n - 1 + answer))


@torch.no_grad()
def capture(model, ids: list[int], n: int, positions: list[int], topk: int) -> dict:
    """One sequence (see the module docstring) through the frozen verifier of ``model`` (a ``KangarooModel``)."""
    seq = torch.tensor([ids], device=model.device)
    caches = model.new_caches(seq.shape[1])
    f = model.forward_deep(model.forward_shallow(seq, caches.shallow).h, caches.deep)[0]
    pos = torch.tensor(positions, dtype=torch.long)
    val, idx = model.verifier_logits(f[pos.to(f.device)]).float().topk(topk, dim=-1)
    return {"ids": torch.tensor(ids, dtype=torch.int32), "n": n, "f": f.half().cpu(), "pos": pos,
            "top_idx": idx.int().cpu(), "top_val": val.half().cpu()}


def tuples(seqs: list[dict]) -> list[tuple[int, int]]:
    """(sequence, row) of every scored position with an entry before it (position >= 1)."""
    return [(i, r) for i, s in enumerate(seqs) for r, p in enumerate(s["pos"].tolist()) if p >= 1]


def make_batch(seqs: list[dict], items: list[tuple[int, int]], window: int) -> Batch:
    """The tuples ``items`` as the buffer would hand them to the trainer: each entry's segment right-aligned,
    the verifier's top-K at its position, KD-only."""
    n, d = len(items), seqs[0]["f"].shape[1]
    f = torch.zeros(n, window, d, dtype=torch.float16)
    ids = torch.zeros(n, window, dtype=torch.long)
    length, first = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for b, (i, r) in enumerate(items):
        s, k = seqs[i], int(seqs[i]["pos"][r]) - 1
        a = max(0, k - window + 1)
        c = k - a + 1
        f[b, window - c:] = s["f"][a:k + 1]
        ids[b, window - c:] = s["ids"][a + 1:k + 2].long()
        length[b], first[b] = c, a
    z_idx = torch.stack([seqs[i]["top_idx"][r] for i, r in items]).long()
    z_val = torch.stack([seqs[i]["top_val"][r] for i, r in items])
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(hk=torch.zeros(n, d, dtype=torch.float16), token=z_idx[:, 0], reward=zeros.float(), pos=zeros,
                 is_first_reject=zeros.bool(), z_idx=z_idx, z_val=z_val, kd_only=torch.ones(n, dtype=torch.bool),
                 feat_f=f, feat_ids=ids, feat_len=length, feat_pos=first)


@torch.no_grad()
def heldout_top1(fd, drafter_vocab, seqs: list[dict]) -> float:
    """The feature drafter ``fd``'s teacher-forced top-1 agreement with the verifier's greedy token (``top_idx``'s
    first column) over every scored position of ``seqs`` (answers decoded greedily)."""
    from dvi.heldout import top1_ids

    hits, total = 0, 0
    for s in seqs:
        g = fd.teacher_forced(s["f"].to(fd.dtype), s["ids"].long())
        pred = top1_ids(None, fd.drafter_head, g, drafter_vocab)  # its head's float32 top-1, as FeatureHeldout's
        pos = s["pos"]
        hits += int((pred[pos - 1] == s["top_idx"][:, 0].long()).sum())
        total += len(pos)
    return hits / max(1, total)
