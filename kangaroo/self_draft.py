"""The self-drafter's loop: the shallow layers and the drafter head propose tokens one at a time while the draft
policy keeps them (Kangaroo's early exit). Used by ``SelfDrafter`` and by ``speculative.draft``. Sampled, each
candidate is the drafter's own pick at its position (``packed_head.propose_sampled``: its tempered, truncated
logits plus the noise the verifier's pick there gets), its confidence that pick's probability."""
from __future__ import annotations

import torch

from kangaroo.blocks import Draft
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.packed_head import propose, propose_sampled
from kangaroo.sampling import GREEDY, SamplingParams
from kangaroo.timing import now


@torch.no_grad()
def self_draft(model: KangarooModel, last_token: int, caches: KangarooCaches, steps: int, policy,
               sampling: SamplingParams = GREEDY) -> Draft:
    """The self-drafter's loop. ``policy.decide(confs)`` sees the confidences so far, the last one the candidate's,
    and answers (keep the candidate, draft another). A candidate not kept costs its head projection only."""
    t0 = now(model.device)
    x = torch.tensor([[last_token]], device=model.device)
    pos = caches.shallow.length + 1   # the position of d_1 (x is at shallow.length)
    out = model.forward_shallow(x, caches.shallow)
    hs, hks, tokens, confs = [out.h], [], [], []
    declined = (None, None, None)
    for _ in range(steps):
        hk = out.hk[:, -1]
        best = propose(model, hk) if sampling.greedy else propose_sampled(model, hk, pos + len(tokens), sampling)
        conf, tok = best.probs[0], model.drafter_token_id(best.columns[0])
        keep, go_on = policy.decide(confs + [conf], "self")
        if not keep:
            declined = (tok, conf, hk[0])
            break
        tokens.append(tok)
        confs.append(conf)
        hks.append(hk)
        out = model.forward_shallow(torch.tensor([[tok]], device=model.device), caches.shallow)
        hs.append(out.h)
        if not go_on:
            break
    hk_all = torch.cat(hks, dim=0) if hks else out.h.new_zeros(0, out.h.shape[-1])
    return Draft(tokens, torch.cat(hs, dim=1), hk_all, confs, ms=(now(model.device) - t0) * 1e3,
                 source="self", last_token=last_token, declined_token=declined[0], declined_conf=declined[1],
                 declined_hk=declined[2], next_hk=out.hk[0, -1])
