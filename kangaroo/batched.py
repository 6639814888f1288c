"""The model's passes over several sequences at once, each over its own caches: what lets one read of the weights
serve several requests' rows (their verify passes and greedy steps in one engine call).

    forward_shallow_batch   tokens of each sequence -> layers [0, k) (+ the adapter) -> ShallowOut per sequence
    forward_deep_batch      layer-k hidden of each sequence -> layers [k, L) -> final norm
    verifier_logits_batch   the verifier's head over every sequence's rows, as few calls as the engine allows

A sequence's rows may be nodes of a token tree (``trees[i]``, ``kangaroo/token_tree.py``; None: causal).
Each result equals the single-sequence pass on that sequence alone, bit for bit: the decoder layers go through
``llama_forward.run_layers_batch`` (same contract), and the head runs over rows of several sequences in one call only
where the lean engine takes them (its kernels are batch-invariant: a row's logits do not depend on the other rows);
elsewhere each sequence's rows go alone, exactly as ``KangarooModel.verifier_logits`` would run them.
"""
from __future__ import annotations

import torch

from kangaroo import cpu_engine
from kangaroo.kangaroo_model import KangarooModel, ShallowOut
from kangaroo.llama_forward import final_norm, project, run_layers_batch


@torch.no_grad()
def forward_shallow_batch(model: KangarooModel, ids: list[torch.Tensor], caches: list, trees=None) -> list[ShallowOut]:
    """``ids[i]`` [1, n_i] appended to shallow cache ``caches[i]``; as ``model.forward_shallow`` on each."""
    starts = [c.length for c in caches]
    trees = trees or [None] * len(ids)
    hs = run_layers_batch(model.shallow_stack, [model.embed_tokens(x) for x in ids], caches, model.rotary_emb, trees)
    return [model.shallow_out(h, c, s, t) for h, c, s, t in zip(hs, caches, starts, trees)]


@torch.no_grad()
def forward_deep_batch(model: KangarooModel, hs: list[torch.Tensor], caches: list, trees=None) -> list[torch.Tensor]:
    """``hs[i]`` [1, n_i, d] appended to deep cache ``caches[i]``; as ``model.forward_deep`` on each."""
    outs = run_layers_batch(model.deep_layers, hs, caches, model.rotary_emb, trees)
    return [final_norm(model.norm, h) for h in outs]


def head_groups(rows: list[int], engine: bool) -> list[list[int]]:
    """Sequences (by index) whose rows share one head call: consecutive ones up to ``cpu_engine.MAX_ROWS`` rows on
    the engine (a sequence is never split), one sequence per call elsewhere."""
    groups: list[list[int]] = []
    total = 0
    for i, n in enumerate(rows):
        if engine and groups and total + n <= cpu_engine.MAX_ROWS:
            groups[-1].append(i)
            total += n
        else:
            groups.append([i])
            total = n
    return groups


@torch.no_grad()
def verifier_logits_batch(model: KangarooModel, h_finals: list[torch.Tensor]) -> list[torch.Tensor]:
    """The verifier's logits [1, n_i, V] of each ``h_finals[i]`` [1, n_i, d]; as ``model.verifier_logits`` on each."""
    weight = model.head_model.weight
    engine = weight.dtype == torch.float32 and all(cpu_engine.applies(h[:, :1]) for h in h_finals)
    out: list[torch.Tensor] = [None] * len(h_finals)  # type: ignore[list-item]
    for group in head_groups([h.shape[1] for h in h_finals], engine):
        if len(group) == 1:
            out[group[0]] = project(h_finals[group[0]], weight)
            continue
        logits = cpu_engine.linear(torch.cat([h_finals[i] for i in group], dim=1), weight)
        for i, part in zip(group, logits.split([h_finals[i].shape[1] for i in group], dim=1)):
            out[i] = part
    return out
