"""What one self-drafted token costs, as a share of one greedy step (the block mode reports it).

A self-drafted token costs the drafter head on the last hk (to propose it) and the shallow layers on it (to get the
next hk), with the Python around them, exactly as ``kangaroo.early_exit`` runs them. Each timed call follows what
precedes the first draft of a block in real decoding: a greedy step (the verify pass of the block before, which
streams the whole model through the caches) and the shallow layers on the block's first token x (paid whether or
not the block drafts). A head timed in a warm loop would sit in the L3 cache and look cheaper than it is. Measured
for every drafter vocabulary size N (``--drafter-vocabs``; 0: the full vocabulary) and head precision
(``--head-precisions``), with a LoRA head whose B is not zero (the live delta of a head learning online; a deployed
head is merged, which costs no more than the base). The rows the pruned head keeps do not change its cost, so the
first N ids stand in.
"""
from __future__ import annotations

import torch

from scripts.profile.measure import cold_median_ms, context_caches


@torch.no_grad()
def draft_costs(km, caches, one: torch.Tensor, ar_step, vocabs: list[int], precisions: list[str], r: int,
                alpha: float, repeats: int) -> list[dict]:
    """One row per (N, precision): the head alone and one whole drafted token (head + shallow), in ms, cold.
    ``ar_step()`` runs one greedy step and leaves the caches as it found them."""
    from kangaroo.drafter_head import attach_drafter_head
    from kangaroo.packed_head import configure, propose

    L, dev, rows = caches.shallow.length, km.device, []
    state = {}

    def before_first_draft():
        ar_step()
        state["hk"] = km.forward_shallow(one, caches.shallow).hk[:, -1]

    def token():  # what self_draft does per drafted token
        best = propose(km, state["hk"])
        km.forward_shallow(torch.tensor([[km.drafter_token_id(best.columns[0])]], device=dev), caches.shallow)
        caches.crop(L)

    def head():
        propose(km, state["hk"])
        caches.crop(L)

    V = km.config.vocab_size
    for n in dict.fromkeys(0 if n >= V else n for n in vocabs):  # N >= V: the full vocabulary, once
        km.drafter_head = None
        km.set_drafter_vocab(torch.arange(n) if n else None)
        torch.nn.init.normal_(attach_drafter_head(km, r=r, alpha=alpha).proj.B, std=1e-3)
        for precision in precisions:
            configure(km, precision)
            rows.append({"vocab": n or V, "precision": precision,
                         "head_ms": cold_median_ms(head, before_first_draft, repeats, dev),
                         "token_ms": cold_median_ms(token, before_first_draft, repeats, dev)})
    km.drafter_head = None
    km.set_drafter_vocab(None)
    configure(km)
    return rows


def measure_draft(km, args, r: int, alpha: float) -> list[dict]:
    """``draft_costs`` at the run's context, for every --drafter-vocabs x --head-precisions."""
    caches, prompt, _, ar = context_caches(km, args.context, args.steps + 1)
    vocabs = [int(v) for v in args.drafter_vocabs.split(",")]
    return draft_costs(km, caches, prompt[:, :1], ar, vocabs, args.head_precisions.split(","), r, alpha,
                       args.repeats)


def draft_markdown(rows: list[dict], ar_ms: float, shallow_ms: float) -> list[str]:
    """The table: per (N, precision), the head, one drafted token and its share of a greedy step."""
    lines = [("One self-drafted token (drafter head + shallow layers on one token, Python included, each timed as "
              "the first draft of a block: after a greedy step and the shallow pass of x; LoRA head, live delta; "
              f"ar = {ar_ms:.1f} ms, shallow alone {shallow_ms:.2f} ms):"), "",
             "| drafter vocabulary | head precision | head ms | drafted token ms | share of a greedy step |",
             "|---:|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['vocab']} | {row['precision']} | {row['head_ms']:.2f} | {row['token_ms']:.2f} | "
                     f"{row['token_ms'] / ar_ms:.1%} |")
    return lines
