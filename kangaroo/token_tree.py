"""A drafted token tree: its shape, what attention sees of it, and where its nodes sit in the caches.

Node 0 is x, the last committed token (the root); nodes 1..n are the drafted tokens (``Draft.tokens[i - 1]`` is node
i), in the order they are verified and laid out in the caches: node i at slot ``root + i``. A parent always comes
before its children, and a node's first child is its main continuation (the drafter's first choice there), so the
main line, root -> first child -> first child ..., is what a chain drafter would have drafted; the other children are
branches (the drafter's next choices at that position). A chain is the tree whose node i's parent is i - 1.

    TokenTree(parents)          the shape: parents[i - 1] is node i's parent (0: the root), always < i
    TreeSlots(root, tree)       a tree laid out from cache slot ``root``: what a forward pass over some of its nodes
                                needs, node i seeing the slots before the root and its own ancestors (itself
                                included), with the RoPE of position root + depth(i) (``positions``, ``mask``, and
                                ``spec``, the engine's form of the same)

So a node's keys and position are exactly those of the token at the end of its root-to-node path decoded one step
at a time; the engine walks them in that order and gets the same bits (``kangaroo/csrc/stack.cpp``). After
verification the accepted path's rows are moved to consecutive slots (``KVCache.keep``) and the rest dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class TokenTree:
    parents: tuple[int, ...]   # parents[i - 1]: the parent node of node i (0: the root x), each < i

    def __post_init__(self):
        object.__setattr__(self, "parents", tuple(int(p) for p in self.parents))
        bad = [i for i, p in enumerate(self.parents, 1) if not 0 <= p < i]
        if bad:
            raise ValueError(f"token tree: node {bad[0]}'s parent {self.parents[bad[0] - 1]} is not an earlier node")

    @classmethod
    def chain(cls, n: int) -> "TokenTree":
        return cls(tuple(range(n)))

    @property
    def size(self) -> int:
        """Drafted nodes (the root not counted)."""
        return len(self.parents)

    @property
    def is_chain(self) -> bool:
        return all(p == i - 1 for i, p in enumerate(self.parents, 1))

    def parent(self, i: int) -> int:
        return -1 if i == 0 else self.parents[i - 1]

    @cached_property
    def depths(self) -> tuple[int, ...]:
        """depth of nodes 0..n (the root 0)."""
        d = [0]
        for p in self.parents:
            d.append(d[p] + 1)
        return tuple(d)

    @cached_property
    def _children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in range(self.size + 1)]
        for i, p in enumerate(self.parents, 1):
            kids[p].append(i)
        return tuple(tuple(k) for k in kids)

    def children(self, i: int) -> tuple[int, ...]:
        """Node i's children in tree order (the first: its main continuation)."""
        return self._children[i]

    def path(self, i: int) -> list[int]:
        """The nodes from the root to node i, both included."""
        out = []
        while i >= 0:
            out.append(i)
            i = self.parent(i)
        return out[::-1]

    def main_line(self, i: int = 0) -> list[int]:
        """The nodes below node i along first children (node i not included)."""
        out = []
        while self.children(i):
            i = self.children(i)[0]
            out.append(i)
        return out

    def is_main(self, i: int) -> bool:
        """Whether node i (> 0) is its parent's first child (a branch otherwise)."""
        return self.children(self.parent(i))[0] == i


@dataclass(frozen=True)
class TreeSlots:
    """``tree`` laid out in a cache from slot ``root`` (node i at ``root + i``). A forward pass appends rows at the
    cache's length ``start``: they are nodes ``start - root ..``, which must exist in the tree."""
    root: int
    tree: TokenTree

    def nodes(self, start: int, n: int) -> range:
        first = start - self.root
        if first < 0 or first + n > self.tree.size + 1:
            raise ValueError(f"a pass over slots {start}..{start + n - 1} is outside the tree at {self.root}.."
                             f"{self.root + self.tree.size}")
        return range(first, first + n)

    def positions(self, start: int, n: int) -> list[int]:
        """The RoPE position of each row of a pass at ``start``: the root's position plus the node's depth."""
        depths = self.tree.depths
        return [self.root + depths[i] for i in self.nodes(start, n)]

    def mask(self, start: int, n: int, device) -> torch.Tensor:
        """Boolean [n, start + n] (True = attend): every slot before the root, then the row's own ancestors."""
        nodes = self.nodes(start, n)
        m = torch.zeros(n, start + n, dtype=torch.bool)
        m[:, :self.root] = True
        for r, i in enumerate(nodes):
            m[r, [self.root + a for a in self.tree.path(i)]] = True
        return m.to(device)

    def spec(self) -> torch.Tensor:
        """The engine's form (``stack.cpp`` ``tree_keys``): int64 [root, -1, parents of nodes 1..n]."""
        return torch.tensor([self.root, -1, *self.tree.parents], dtype=torch.int64)
