"""Accept and commit a verified token tree (``kangaroo/token_tree.py``): the picks, the accepted path, the caches
made consecutive again, and the block the rest of the project reads.

    tree_picks(logits, d, first_pos, params)   the verifier's pick at each node's row: node i's row predicts the
                                               token after it, at position first_pos + depth(i); greedy: every row
                                               (the argmax); sampled: along the accepted path only (-1 elsewhere),
                                               each the plain sampler's pick at that position, so lossless as a chain
    accepted_path(d, v)                        from the root, the child whose token equals its parent's pick, as long
                                               as there is one: the longest root-to-node path the verifier agrees with
    commit_tree(model, d, v, caches, start)    both caches keep the path's rows at consecutive slots (the rest
                                               dropped); the ``Block`` of the path (below)

The block of a tree is that of the path's line: the accepted path, then on from its last node along first children
(the drafted continuation the verifier rejected, as a chain's draft runs on past its first rejection). ``Block.draft``
and ``Block.verification`` hold that line's tokens, confidences, features and rows, so the learner's tuples, the
calibration and the metrics read a tree's block as a chain's: accepted positions, the first rejected one. What the
other branches give is in ``Block.tree`` (``TreeBlock``): every node a path node's child that the verifier judged
(``judged``: the calibrator counts them, branches apart) and the rejected ones beside the line (``rejected_off_line``:
the learner's reject tuples, e.g. the drafter's first choice when a second one was accepted).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from kangaroo.blocks import Block, Draft, TreeBlock, Verification
from kangaroo.llama_forward import argmax_rows
from kangaroo.sampling import SamplingParams, sample
from kangaroo.shallow import ShallowOut


def tree_picks(logits: torch.Tensor, d: Draft, first_pos: int, params: SamplingParams) -> list[int]:
    """The verifier's pick at each node's row of ``logits`` [n + 1, V] (see the module docstring)."""
    if params.greedy:
        return argmax_rows(logits)
    tree = d.tree
    out = [-1] * (tree.size + 1)
    node = 0
    while node is not None:
        out[node] = sample(logits[node], first_pos + tree.depths[node], params)
        node = next((c for c in tree.children(node) if d.tokens[c - 1] == out[node]), None)
    return out


def accepted_path(d: Draft, v: Verification) -> list[int]:
    """The accepted path's nodes, the root (0) first."""
    tree, node, path = d.tree, 0, [0]
    while True:
        node = next((c for c in tree.children(node) if d.tokens[c - 1] == v.tokens[node]), None)
        if node is None:
            return path
        path.append(node)


def path_committed(d: Draft, v: Verification, path: list[int]) -> list[int]:
    """What a path commits: its drafted tokens and the verifier's pick after its last node."""
    return [d.tokens[i - 1] for i in path[1:]] + [v.tokens[path[-1]]]


def commit_tree(model, d: Draft, v: Verification, caches, start: int) -> Block:
    """Accept the tree's longest agreed path, keep its rows (both caches, slots from ``start``: x's), and make
    its block."""
    path = accepted_path(d, v)
    caches.keep([start + i for i in path], start)
    line = path + d.tree.main_line(path[-1])
    return Block(line_draft(d, line), line_verification(v, line), len(path) - 1, path_committed(d, v, path),
                 context=model.segment_context(caches.shallow, start, start + len(path)),
                 features=model.feature_context(caches, start, start + len(path)), tree=TreeBlock(d, v, path))


def line_draft(d: Draft, line: list[int]) -> Draft:
    """The chain draft of the tree's nodes ``line`` (a root-to-leaf path, the root first)."""
    nodes = line[1:]
    idx = [i - 1 for i in nodes]
    main = line == [0] + d.tree.main_line(0)   # the drafter's own chain: its declined candidate still follows it
    covered = sum(i < d.covered for i in line)
    return replace(d, tokens=[d.tokens[i] for i in idx], confidences=[d.confidences[i] for i in idx],
                   h=None if d.h is None else d.h[:, line[:covered]],
                   hk=None if d.hk is None else d.hk[idx], tree=None,
                   next_hk=d.next_hk if main else None,
                   declined_token=d.declined_token if main else None, declined_conf=d.declined_conf if main else None,
                   declined_hk=d.declined_hk if main else None)


def line_verification(v: Verification, line: list[int]) -> Verification:
    """The rows of ``line`` and their picks (sampled: those of the accepted path, where the picks stop)."""
    rows = torch.tensor(line, device=v.logits.device)
    tokens = [v.tokens[i] for i in line if v.tokens[i] >= 0]
    shallow, first = None, sum(i < v.hk_from for i in line)
    if v.shallow is not None and first < len(line):
        ix = torch.tensor([i - v.hk_from for i in line[first:]], device=v.shallow.h.device)
        full = v.shallow
        shallow = ShallowOut(full.h.index_select(1, ix), features=lambda: full.hk.index_select(1, ix))
    features = None if v.features is None else v.features.index_select(0, rows.to(v.features.device))
    return Verification(v.logits.index_select(0, rows), tokens, ms=v.ms, shallow=shallow, hk_from=first,
                        features=features)
