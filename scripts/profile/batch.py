"""What one greedy step costs when it decodes several sequences at once, as the server batches its requests
(the block mode reports it; the server's scheduler makes the same calls, ``kangaroo/batched.py``).

Each of c sequences holds its own ``--context``-token prompt in its own caches; one step runs its next token through
the shallow layers, the deep layers and the verifier's head in one engine call per stage, then the argmax. From the
median step time t(c): tokens/s = c / t(c), and ``c * t(1) / t(c)``, the most that c clients decoding together can
reach against one client decoding alone when nothing else costs anything (no drafting, HTTP or prefill): the
engine's ceiling for a load run's "c clients / 1 client".
"""
from __future__ import annotations

import torch

from scripts.profile.measure import median_ms


@torch.no_grad()
def batch_costs(km, context: int, sizes: list[int], repeats: int) -> dict[int, float]:
    """Median ms of one greedy step of c sequences (one token each), for each c of ``sizes``."""
    from kangaroo.batched import forward_deep_batch, forward_shallow_batch, verifier_logits_batch

    gen = torch.Generator().manual_seed(0)
    n = max(sizes)
    prompts = [torch.randint(3, km.config.vocab_size, (1, context), generator=gen).to(km.device) for _ in range(n)]
    caches = [km.new_caches(context + 2) for _ in range(n)]
    for p, c in zip(prompts, caches):
        km.forward_deep(km.forward_shallow(p, c.shallow).h, c.deep)

    def step(c: int):
        def run():
            ids = [p[:, -1:] for p in prompts[:c]]
            outs = forward_shallow_batch(km, ids, [x.shallow for x in caches[:c]])
            hs = forward_deep_batch(km, [o.h for o in outs], [x.deep for x in caches[:c]])
            [logits.argmax(-1).tolist() for logits in verifier_logits_batch(km, hs)]
            for x in caches[:c]:
                x.crop(context)
        return run

    return {c: median_ms(step(c), repeats, km.device) for c in sizes}


def batch_markdown(costs: dict[int, float]) -> list[str]:
    one = costs.get(1)
    lines = ["", "Greedy steps over c sequences at once (one token each, each over its own caches; the server's "
             "batched calls). Ceiling = c x t(1) / t(c): what c clients can reach against one when nothing but the "
             "engine costs time:", "",
             "| sequences c | ms a step | tokens/s | ceiling c x t(1) / t(c) |", "|---:|---:|---:|---:|"]
    for c, ms in costs.items():
        ceiling = f"{c * one / ms:.2f}x" if one else "-"
        lines.append(f"| {c} | {ms:.1f} | {1e3 * c / ms:.1f} | {ceiling} |")
    return lines
