"""Kangaroo greedy self-speculative decoding as three named phases: draft, verify, accept.

One block, starting from the last committed token x at position P (not yet seen by any layer):

  draft   shallow(x) -> hk_0 -> d_1; shallow(d_1) -> hk_1 -> d_2; ... until ``steps`` tokens are drafted or
          the drafter's top-1 probability of the token just drafted is under ``threshold`` (that token is
          still verified). The shallow hidden states of x, d_1..d_m are kept for the verifier.
  verify  deep layers on those m+1 hidden states in one pass -> verifier tokens v_0..v_m (v_j follows
          the j-th input).
  accept  a = longest prefix with d_{j+1} == v_j; commit d_1..d_a and v_a (the verifier's own token).
          Both caches are cropped to P + 1 + a: what the rejected drafts wrote is dropped.

Every committed token is the verifier's greedy choice, so the output equals greedy decoding of the base model.
Sampled (``kangaroo/sampling.py``), the verifier's token at each row is the plain sampler's pick at that position
(the same logits, the same noise of (seed, position)): the output equals plain sampling with the same seed.
With a trained adapter the block also carries the layer-k residuals its DVI training segments are cut from
(``Block.context``, copied from the shallow cache's rows after the crop: committed positions only).

Who drafts is behind one seam (``kangaroo/drafters/``): the self-drafter above, model-free lookups (prompt
lookup, the memory of earlier outputs), or a chain of them. A draft may come without layer-k hidden states (a
lookup's draft has none) or with them for a prefix only; ``verify`` runs the shallow layers on the inputs not yet
covered, so the shallow cache always holds exactly the verified positions. A block may draft zero tokens: it is
then one plain greedy step.

A draft may be a token tree (``Draft.tree``, ``kangaroo/token_tree.py``): verify runs every node in the same one
pass, each attending to the committed prefix and its own ancestors, at the position of its depth, so each node's row
is bit for bit the one-token steps along its path; accept takes the longest root-to-node path the verifier agrees
with and both caches keep its rows at consecutive positions (``kangaroo/tree_accept.py``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from kangaroo.batched import forward_deep_batch, forward_shallow_batch, verifier_logits_batch
from kangaroo.blocks import Block, Draft, PrefillTargets, Verification
from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafters import Drafter, SelfDrafter
from kangaroo.greedy import DecodeResult, clip_at_stop
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.sampling import GREEDY, SamplingParams, pick_rows
from kangaroo.early_exit import self_draft
from kangaroo.timing import now
from kangaroo.token_tree import TreeSlots
from kangaroo.tree_accept import accepted_path, commit_tree, path_committed, tree_picks

StopRule = Callable[[list[int]], "tuple[list[int], bool]"]  # new tokens so far -> (the ones kept, stop now)

__all__ = ["Block", "Draft", "PrefillTargets", "StopRule", "Verification", "accept", "draft", "drafter_step",
           "drafter_step_batch", "kangaroo_generate", "prefill", "self_draft", "speculative_step", "verify",
           "verify_batch"]


def draft(model: KangarooModel, last_token: int, caches: KangarooCaches, steps: int, threshold: float) -> Draft:
    """Kangaroo's self-draft under the fixed threshold rule (at least one token per block)."""
    return self_draft(model, last_token, caches, steps, ThresholdStop(threshold))


def verify(model: KangarooModel, d: Draft, caches: KangarooCaches, sampling: SamplingParams = GREEDY) -> Verification:
    """Deep layers over x, d_1..d_m in one pass. Inputs the draft holds no layer-k hidden states for (an n-gram
    draft: all of them) first go through the shallow layers here, so both caches end at the same length. Row j's
    token is the pick (``sampling.pick_rows``) at the position after input j; sampled, rows past the first
    rejection are not picked (``Verification.tokens`` ends at v_a)."""
    return verify_batch(model, [d], [caches], [sampling])[0]


@torch.no_grad()
def verify_batch(model: KangarooModel, drafts: list[Draft], caches: list[KangarooCaches],
                 sampling: Optional[list[SamplingParams]] = None) -> list[Verification]:
    """``verify`` of several sequences' drafts, each over its own caches and under its own ``sampling`` params
    (None: all greedy), their passes batched (``kangaroo/batched.py``): each result equals ``verify`` on that draft
    alone. The pass's time is shared out evenly (``Verification.ms``)."""
    t0 = now(model.device)
    sampling = sampling or [GREEDY] * len(drafts)
    first = [c.deep.length + 1 for c in caches]  # the position of the token row 0 picks (x is at deep.length)
    trees = [None if d.tree is None else TreeSlots(c.deep.length, d.tree) for d, c in zip(drafts, caches)]
    todo = [i for i, d in enumerate(drafts) if d.covered < len(d.tokens) + 1]
    outs = forward_shallow_batch(model, [_uncovered(drafts[i], model.device) for i in todo],
                                 [caches[i].shallow for i in todo], [trees[i] for i in todo])
    shallow = dict(zip(todo, outs))
    hs = [_verifier_input(d, shallow.get(i)) for i, d in enumerate(drafts)]
    starts = [c.deep.length for c in caches]
    finals = forward_deep_batch(model, hs, [c.deep for c in caches], trees)
    logits = verifier_logits_batch(model, finals)
    for d, c, s, f in zip(drafts, caches, starts, finals):
        if c.features is not None:  # the feature drafter's log: the true features, kept as the caches are cropped
            c.features.write(s, [d.last_token] + d.tokens, f[0])  # a tree's nodes in slot order (commit keeps a path)
    ms = (now(model.device) - t0) * 1e3 / max(1, len(drafts))
    return [Verification(z[0], _picks(z[0], d, first[i], sampling[i]), ms=ms, shallow=shallow.get(i),
                         hk_from=d.covered, features=f[0]) for i, (d, z, f) in enumerate(zip(drafts, logits, finals))]


def _picks(logits: torch.Tensor, d: Draft, first_pos: int, params: SamplingParams) -> list[int]:
    if d.tree is not None:
        return tree_picks(logits, d, first_pos, params)
    return pick_rows(logits, first_pos, params, d.tokens)


def _uncovered(d: Draft, device) -> torch.Tensor:
    """[1, n] the inputs (x, d_1, ...) the draft holds no layer-k hidden states for."""
    if d.last_token is None:
        raise ValueError("a draft without layer-k hidden states for x must carry last_token")
    return torch.tensor([([d.last_token] + d.tokens)[d.covered:]], device=device)


def _verifier_input(d: Draft, rest) -> torch.Tensor:
    """The layer-k hidden states of all the draft's inputs: its own, then those of the shallow pass ``rest``."""
    if rest is None:
        return d.h
    return rest.h if d.h is None or d.h.shape[1] == 0 else torch.cat([d.h, rest.h], dim=1)


def accept(d: Draft, v: Verification) -> tuple[int, list[int]]:
    """(accepted drafted tokens, the committed tokens: those and the verifier's next one)."""
    if d.tree is not None:
        path = accepted_path(d, v)
        return len(path) - 1, path_committed(d, v, path)
    a = 0
    while a < len(d.tokens) and d.tokens[a] == v.tokens[a]:
        a += 1
    return a, d.tokens[:a] + [v.tokens[a]]


def speculative_step(model: KangarooModel, last_token: int, caches: KangarooCaches, steps: int,
                     threshold: float) -> Block:
    """One Kangaroo block with the self-drafter under the threshold rule."""
    start = caches.shallow.length
    return _verify_accept(model, draft(model, last_token, caches, steps, threshold), caches, start)


def drafter_step(model: KangarooModel, drafter: Drafter, history: list[int], caches: KangarooCaches) -> Block:
    """One block: ``drafter.draft`` (``history[-1]`` is x, not yet in any cache) -> verify -> accept -> crop, under
    the sequence's sampling params (``drafter.sampling``: the drafter is the sequence's, ``Drafter.sample_with``)."""
    start = caches.shallow.length
    d = drafter.draft(model, caches, history)
    return _commit(model, d, verify(model, d, caches, drafter.sampling), caches, start)


def drafter_step_batch(model: KangarooModel, drafters: list, histories: list[list[int]],
                       caches: list[KangarooCaches]) -> list[Block]:
    """One block of each of several sequences (a request each, with its own drafter, history, caches and sampling
    params, ``drafter.sampling``): every drafter drafts alone, then one batched verify pass (``verify_batch``), then
    accept/crop per sequence. Each block equals ``drafter_step`` on that sequence alone."""
    starts = [c.shallow.length for c in caches]
    drafts = [dr.draft(model, c, h) for dr, c, h in zip(drafters, caches, histories, strict=True)]
    verdicts = verify_batch(model, drafts, caches, [dr.sampling for dr in drafters])
    return [_commit(model, d, v, c, s) for d, v, c, s in zip(drafts, verdicts, caches, starts)]


def _verify_accept(model: KangarooModel, d: Draft, caches: KangarooCaches, start: int) -> Block:
    return _commit(model, d, verify(model, d, caches), caches, start)


def _commit(model: KangarooModel, d: Draft, v: Verification, caches: KangarooCaches, start: int) -> Block:
    """accept, then crop both caches to the committed length (a tree: keep its accepted path, ``commit_tree``)."""
    if d.tree is not None:
        return commit_tree(model, d, v, caches, start)
    a, committed = accept(d, v)
    caches.crop(start + 1 + a)
    return Block(d, v, a, committed, context=model.segment_context(caches.shallow, start, start + 1 + a),
                 features=model.feature_context(caches, start, start + 1 + a))


def pick_prefill_positions(n_prefilled: int, budget: int) -> list[int]:
    """At most ``budget`` of the prefilled positions 0..n_prefilled-1, evenly spread, the last one included."""
    if budget <= 0 or n_prefilled <= 0:
        return []
    if budget >= n_prefilled:
        return list(range(n_prefilled))
    if budget == 1:
        return [n_prefilled - 1]
    return sorted({round(i * (n_prefilled - 1) / (budget - 1)) for i in range(budget)})


@torch.no_grad()
def prefill(model: KangarooModel, input_ids: torch.Tensor, caches: KangarooCaches, positions: int = 0,
            on_targets: Optional[Callable[[PrefillTargets], None]] = None) -> int:
    """Run the prompt but its last token through both halves; return that last token. With ``positions`` > 0 and
    ``on_targets``, the verifier head also runs over up to that many prompt positions (``pick_prefill_positions``)
    and ``on_targets`` gets them as ``PrefillTargets``; nothing else changes (no cache, no committed token)."""
    n = input_ids.shape[1] - 1
    if n > 0:
        sh = model.forward_shallow(input_ids[:, :-1], caches.shallow)
        h_final = model.forward_deep(sh.h, caches.deep)
        if caches.features is not None:
            caches.features.write(0, input_ids[0, :-1], h_final[0])
        pos = pick_prefill_positions(n, positions) if on_targets is not None else []
        if pos:
            t0 = now(model.device)
            ix = torch.tensor(pos, device=h_final.device)
            logits = model.verifier_logits(h_final.index_select(1, ix))[0]
            context = model.segment_context(caches.shallow, 0, n)
            # a trained adapter's trainer reads the segments, not hk: its layer need not run over the prompt
            hk = (sh.hk[0].index_select(0, ix.to(sh.h.device)) if context is None
                  else sh.h.new_zeros(len(pos), sh.h.shape[-1]))
            ms = (now(model.device) - t0) * 1e3
            nxt = [int(input_ids[0, i + 1]) for i in pos]
            on_targets(PrefillTargets(pos, hk, logits, nxt, input_ids.shape[1], ms, context=context,
                                      features=model.feature_context(caches, 0, n)))
    return int(input_ids[0, -1])


def kangaroo_generate(model: KangarooModel, input_ids: torch.Tensor, max_new_tokens: int, eos_ids: set[int],
                      steps: int = 6, threshold: float = 0.6,
                      on_block: Optional[Callable[[Block], None]] = None, drafter: Optional[Drafter] = None,
                      cache_pool=None, on_prefill: Optional[Callable[[PrefillTargets], None]] = None,
                      prefill_positions: int = 0, stop_rule: Optional[StopRule] = None,
                      on_commit: Optional[Callable[[list[int]], None]] = None,
                      sampling: SamplingParams = GREEDY) -> DecodeResult:
    """Greedy decoding of ``input_ids`` [1, n], or sampled under ``sampling`` (equal to ``greedy_decode`` with the
    same params, token for token); ``on_block`` sees every block (DVI learns from it).
    ``drafter`` (``kangaroo/drafters/``) defaults to the self-drafter under the threshold rule (``steps``,
    ``threshold``); when given, its own settings apply, and it sees ``begin(prompt)``, every block
    (``observe``) and ``end(output)``. ``cache_pool`` (a ``kangaroo.cache_pool.ReusableCaches``)
    lends caches kept across calls; else new ones. ``on_prefill`` gets the verifier's logits at up to
    ``prefill_positions`` prompt positions (``prefill``), for dense DVI supervision. ``stop_rule(tokens) -> (kept,
    stop)`` replaces the EOS / ``max_new_tokens`` rule (``clip_at_stop``; it must stop by ``max_new_tokens``, the
    caches hold no more); ``on_commit`` gets each block's kept tokens (a streamer)."""
    if drafter is None:
        drafter = SelfDrafter(steps=steps, policy=ThresholdStop(threshold))
    clip = stop_rule or (lambda tokens: clip_at_stop(tokens, eos_ids, max_new_tokens))
    need = input_ids.shape[1] + max_new_tokens + drafter.steps + 1
    caches = cache_pool.get(need) if cache_pool is not None else model.new_caches(need)
    history = input_ids[0].tolist()
    drafter.sample_with(sampling)
    drafter.begin(history)
    prefill(model, input_ids, caches, prefill_positions, on_prefill)
    res = DecodeResult(tokens=[])
    while True:
        blk = drafter_step(model, drafter, history, caches)
        drafter.observe(blk)
        res.drafter_ms += blk.draft.ms
        res.verifier_ms += blk.verification.ms
        if on_block is not None:
            on_block(blk)
        n_before = len(res.tokens)
        res.tokens, stop = clip(res.tokens + blk.committed)
        res.accept_lengths.append(len(res.tokens) - n_before)
        if on_commit is not None and len(res.tokens) > n_before:
            on_commit(res.tokens[n_before:])
        if stop:
            drafter.end(res.tokens)
            return res
        history.extend(res.tokens[n_before:])
