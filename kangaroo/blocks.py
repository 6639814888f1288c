"""What one speculative block is made of: the ``Draft`` a drafter proposes, the verifier's ``Verification`` of it,
and the ``Block`` that records both and what was accepted and committed (``kangaroo/speculative.py`` makes
them, ``kangaroo/drafters/`` draft them, DVI learns from them).

A draft may be a token tree (``Draft.tree``, ``kangaroo/token_tree.py``): its tokens are the tree's nodes in tree
order. Its block is then that of the accepted path (``kangaroo/tree_accept.py``): ``Block.draft`` is the path, and
below its last accepted node the main line (as a chain's draft runs on past its first rejection),
``Block.verification`` those rows, and ``Block.tree`` the whole tree with every row; so every reader of a chain's
block reads a tree's block the same way."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from kangaroo.feature_log import FeatureContext
    from kangaroo.shallow import ShallowOut
    from kangaroo.token_tree import TokenTree

NONE = "none"   # the source of a block that drafted nothing (a plain greedy step)


@dataclass
class HiddenContext:
    """Layer-k residuals h (the verifier's input) at consecutive positions ``first_pos ..``, from which the training
    segments of a trained adapter are cut: the ``window`` positions ending at a tuple's input
    (``KangarooModel.segment_context``)."""
    h: torch.Tensor     # [c, d]
    first_pos: int
    window: int

    def segment(self, pos: int) -> tuple[torch.Tensor, int]:
        """The rows of positions ``max(0, pos - window + 1) .. pos`` (a view) and the position of the first."""
        first = max(0, pos - self.window + 1)
        if first < self.first_pos or pos >= self.first_pos + self.h.shape[0]:
            raise ValueError(f"segment {first}..{pos} outside the context {self.first_pos}.."
                             f"{self.first_pos + self.h.shape[0] - 1}")
        return self.h[first - self.first_pos:pos - self.first_pos + 1], first


@dataclass
class Draft:
    tokens: list[int]                # d_1..d_m (m may be 0)
    h: Optional[torch.Tensor]        # [1, c, d] layer-k hidden of the first c of x, d_1..d_m (c = m+1 for the
                                     # self-drafter, 0 / None for an n-gram draft): verify runs the rest
    hk: Optional[torch.Tensor]       # [m, d] drafter features that produced d_1..d_m (self-drafted only, else None)
    confidences: list[float]         # drafter top-1 probability (or estimated acceptance) of each d_i
    ms: float = 0.0
    source: str = "self"             # who drafted: "self" (shallow layers + head), "ngram" (prompt lookup),
                                     # "memory" (earlier outputs): the drafter's name
    last_token: Optional[int] = None  # x: needed by verify when h does not cover it
    # the candidate d_{m+1} the policy declined (self-drafter): when d_1..d_m are all accepted, the verifier's
    # token v_m judges it for free, so calibration and DVI still learn from blocks that draft nothing
    declined_token: Optional[int] = None
    declined_conf: Optional[float] = None
    declined_hk: Optional[torch.Tensor] = None   # [d]
    next_hk: Optional[torch.Tensor] = None       # [d] hk of the last input (x or d_m), self-drafter: the features
                                                 # the verifier's row m is predicted from (dense supervision)
    tried_ms: dict[str, float] = field(default_factory=dict)  # a chain: each drafter it asked, and its ms
    # a token tree: tokens, confidences and hk are per node in tree order (hk: the features that proposed the node),
    # h covers the first ``covered`` nodes (x first); None: a chain
    tree: Optional["TokenTree"] = None

    @property
    def covered(self) -> int:
        """Inputs (x, d_1, ...) whose layer-k hidden states this draft already holds."""
        return 0 if self.h is None else self.h.shape[1]

    def hk_state_of(self, i: int) -> torch.Tensor:
        """The post-norm layer-k features the drafter head projected to draft d_i (1-based), float16 [d]."""
        return self.hk[i - 1].to(torch.float16)


@dataclass
class Verification:
    logits: torch.Tensor       # [m+1, V] verifier logits; row j predicts the token after input j
    tokens: list[int]          # v_0..v_m (greedy); sampled: v_0..v_a, picked up to the first rejection
    ms: float = 0.0
    shallow: Optional["ShallowOut"] = None  # the shallow pass verify ran on the inputs from ``hk_from`` on
    hk_from: int = 0                        # the first of those inputs (the draft's ``covered``)
    features: Optional[torch.Tensor] = None  # [m+1, d] the verifier's post-norm last-layer states: row j is what
                                             # its head projected to row j of ``logits`` (the feature drafter's f)

    @property
    def hk(self) -> Optional[torch.Tensor]:
        """[m+1-hk_from, d] hk of the inputs verify ran the shallow layers on (computed on first read: a windowed
        adapter's features cost nothing until then)."""
        return None if self.shallow is None else self.shallow.hk[0]


@dataclass
class TreeBlock:
    draft: Draft                 # the tree as drafted (``draft.tree``)
    verification: Verification   # every node's row (tokens: the picks, -1 where none was taken)
    path: list[int]              # the accepted path's nodes, the root (0) first

    def judged(self) -> list[tuple[int, bool]]:
        """(node, accepted) for every node whose parent is on the accepted path: the nodes the verifier judged."""
        tree, on_path = self.draft.tree, set(self.path)
        return [(c, c in on_path) for p in self.path for c in tree.children(p)]

    def rejected_off_line(self) -> list[int]:
        """The judged, rejected nodes that are not on the block's line (a chain has none)."""
        line = set(self.path) | set(self.draft.tree.main_line(self.path[-1])[:1])
        return [c for c, ok in self.judged() if not ok and c not in line]


@dataclass
class Block:
    draft: Draft
    verification: Verification
    accepted: int              # a: drafted tokens accepted
    committed: list[int]       # d_1..d_a, v_a
    context: Optional[HiddenContext] = None  # trained adapter: layer-k residuals up to the last committed input
    tree: Optional[TreeBlock] = None       # a token tree's block: the tree, every node's row, the accepted path
    features: Optional["FeatureContext"] = None  # feature drafter: features and tokens up to the last committed input

    def input_segment(self, j: int) -> tuple[torch.Tensor, int]:
        """Trained adapter: the segment (rows, position of the first) ending at committed input j (0: x)."""
        c = self.context
        return c.segment(c.first_pos + c.h.shape[0] - 1 - self.accepted + j)

    def feature_segment(self, j: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Feature drafter: the segment of the entry whose output the verifier's row j judges, (f_{P+j-1}, the
        token at P+j) with the entries before it (``FeatureContext.segment``; P: the position of x)."""
        c = self.features
        return c.segment(c.end - 1 - self.accepted + j - 1)

    @property
    def drafted(self) -> int:
        return len(self.draft.tokens)

    @property
    def source(self) -> str:
        """Whose draft the verifier checked: the drafter's name, or ``NONE`` for a plain greedy step."""
        return self.draft.source if self.draft.tokens else NONE

    @property
    def asked_ms(self) -> dict[str, float]:
        """Each drafter asked to draft this block, and its ms (a lone drafter: itself)."""
        return self.draft.tried_ms or {self.draft.source: self.draft.ms}

    @property
    def judged_declined(self) -> Optional[bool]:
        """Whether the verifier agreed with the declined candidate (None: none, or not judged)."""
        d = self.draft
        if d.declined_token is None or self.accepted < self.drafted:
            return None
        return d.declined_token == self.verification.tokens[self.drafted]

    def input_hk(self, j: int) -> Optional[torch.Tensor]:
        """The layer-k drafter features [d] of input j (0: x, j: d_j), the ones the verifier's row j is predicted
        from, when this block computed them (the drafting loop or verify); else None."""
        d, v = self.draft, self.verification
        if d.hk is not None and j < d.hk.shape[0]:
            return d.hk[j]
        if j == self.drafted and d.next_hk is not None:
            return d.next_hk
        if v.hk is not None and v.hk_from <= j < v.hk_from + v.hk.shape[0]:
            return v.hk[j - v.hk_from]
        return None

    @property
    def first_proposal(self) -> Optional[int]:
        """The self-drafter's top-1 token for the block's first position: d_1, or the candidate it declined there.
        None when the drafter computed no candidate (an n-gram block, a goodput block that skipped its probe)."""
        d = self.draft if self.tree is None else self.tree.draft   # a tree's node 1: the drafter's first choice
        if d.source != "self":
            return None
        return d.tokens[0] if d.tokens else d.declined_token

    @property
    def top1_agree(self) -> Optional[bool]:
        """Whether ``first_proposal`` equals the verifier's v_0 (None: no proposal), sent to the verifier or not."""
        p = self.first_proposal
        return None if p is None else p == self.verification.tokens[0]


@dataclass
class PrefillTargets:
    """The verifier's logits at a subsample of prompt positions, with the drafter features there (dense DVI
    supervision from the prefill). Row r: prompt position ``positions[r]`` predicts the token after it."""
    positions: list[int]       # 0-based prompt positions, each < n - 1 (the last prompt token is x, not prefilled)
    hk: torch.Tensor           # [n_pos, d] layer-k drafter features at those positions
    logits: torch.Tensor       # [n_pos, V] verifier logits there
    next_tokens: list[int]     # the prompt's token after each position
    prompt_len: int = 0
    ms: float = 0.0            # the extra cost: the verifier head over those rows (prefill computes no logits else)
    context: Optional[HiddenContext] = None  # trained adapter: the prompt's layer-k residuals (from position 0)
    features: Optional["FeatureContext"] = None  # feature drafter: the prompt's features and tokens (from position 0)
