"""Kangaroo's early exit, the self-drafter's loop (``self_draft``): the shallow layers and the drafter head propose
tokens one at a time while the draft policy keeps them. Used by ``SelfDrafter`` and by ``speculative.draft``.
Sampled, each candidate is the drafter's own pick at its position (``packed_head.propose_sampled``: its tempered,
truncated logits plus the noise the verifier's pick there gets), its confidence that pick's probability."""
from __future__ import annotations

import torch

from kangaroo.blocks import Draft
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.packed_head import propose, propose_sampled
from kangaroo.sampling import GREEDY, SamplingParams
from kangaroo.timing import now
from kangaroo.tree_growth import TreeGrowth


@torch.no_grad()
def self_draft(model: KangarooModel, last_token: int, caches: KangarooCaches, steps: int, policy,
               sampling: SamplingParams = GREEDY, width: int = 1) -> Draft:
    """The self-drafter's loop. ``policy.decide(confs)`` sees the confidences so far, the last one the candidate's,
    and answers (keep the candidate, draft another). A candidate not kept costs its head projection only.
    ``width``: at most this many children a node (a tree of at most ``steps`` nodes; 1: a chain)."""
    t0 = now(model.device)
    root = caches.shallow.length      # x's position; d_1's is root + 1
    out = model.forward_shallow(torch.tensor([[last_token]], device=model.device), caches.shallow)
    grow = TreeGrowth(policy, "self", width, steps)
    hs, hks, node = [out.h], [], 0    # node: the main line's last node (its row is the first of ``out``)
    declined = (None, None, None)
    while not grow.full:
        hk = out.hk[:, 0]
        pos = root + 1 + len(grow.main_confs)
        best = (propose(model, hk, width) if sampling.greedy else
                propose_sampled(model, hk, pos, sampling, width))
        conf, tok = best.probs[0], model.drafter_token_id(best.columns[0])
        keep, go_on = grow.decide(conf)
        if not keep:
            declined = (tok, conf, hk[0])
            break
        parent, node = node, grow.add_main(tok, conf, node)
        row = [tok] + [t for t, p in zip(map(model.drafter_token_id, best.columns[1:]), best.probs[1:])
                       if grow.branch(t, p, parent) is not None]
        hks += [hk] * len(row)
        slots = grow.slots(root)   # None while a chain: the chain's call, as ever
        tree = () if slots is None else (slots,)
        out = model.forward_shallow(torch.tensor([row], device=model.device), caches.shallow, *tree)
        hs.append(out.h)
        if not go_on:
            break
    hk_all = torch.cat(hks, dim=0) if hks else out.h.new_zeros(0, out.h.shape[-1])
    return Draft(grow.tokens, torch.cat(hs, dim=1), hk_all, grow.confs, ms=(now(model.device) - t0) * 1e3,
                 source="self", last_token=last_token, declined_token=declined[0], declined_conf=declined[1],
                 declined_hk=declined[2], next_hk=out.hk[0, 0], tree=grow.tree)
