"""A token tree as a drafter grows it (``kangaroo/token_tree.py``), whoever drafts: the main line token by token as
a chain is drafted (the policy's ``decide``), and branches beside it where the policy's pay rule says they pay
(``branch``: a node's probability of being accepted, times the token it adds, against the verify rows it costs).

    TreeGrowth(policy, source, width, budget)
        add_main(token, conf, parent)   the main line's next node (the policy kept it)
        branch(token, conf, parent)     a candidate off the main line: joins (its node; None: it does not) if
                                        ``parent`` has fewer than ``width`` children, none with this token, the
                                        tree has room (``budget`` nodes: the drafter's ``steps``) and the policy
                                        says it pays
        decide(conf)                    the policy's decide for the main line's next candidate, told of the branches
        tree / slots(root)              the ``TokenTree`` (None while it is a chain) and its ``TreeSlots``

Node 0 is x; nodes are numbered in the order they join, so a parent comes before its children and a node's first
child is the first that joined: the main line's nodes join first and each candidate list is tried best first.
"""
from __future__ import annotations

from typing import Optional

from kangaroo.token_tree import TokenTree, TreeSlots


class TreeGrowth:
    def __init__(self, policy, source: str, width: int, budget: int):
        self.policy, self.source, self.width, self.budget = policy, source, width, budget
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.confs: list[float] = []
        self.main: list[bool] = []          # per node: its parent's first child
        self.main_confs: list[float] = []   # the main line's confidences (what ``decide`` sees)
        self.gain, self.rows = 0.0, 0       # the branches' expected accepted tokens and their verify rows

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def full(self) -> bool:
        return self.size >= self.budget

    @property
    def extra(self) -> tuple[float, int]:
        return self.gain, self.rows

    def children(self, node: int) -> list[int]:
        return [i for i, p in enumerate(self.parents, 1) if p == node]

    def path(self, node: int) -> list[tuple[float, bool]]:
        """(confidence, first child) of each node from the root's child down to ``node`` (empty for the root)."""
        out = []
        while node > 0:
            out.append((self.confs[node - 1], self.main[node - 1]))
            node = self.parents[node - 1]
        return out[::-1]

    def decide(self, conf: float) -> tuple[bool, bool]:
        """The policy's decide on the main line's next candidate (told of the branches once there are any: a
        chain's call is the policy's plain ``decide(confs, source)``)."""
        confs = self.main_confs + [conf]
        if self.rows:
            return self.policy.decide(confs, self.source, self.extra)
        return self.policy.decide(confs, self.source)

    def _add(self, token: int, conf: float, parent: int) -> int:
        self.main.append(not self.children(parent))
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.confs.append(float(conf))
        return self.size

    def add_main(self, token: int, conf: float, parent: int) -> int:
        self.main_confs.append(float(conf))
        return self._add(token, conf, parent)

    def branch(self, token: int, conf: float, parent: int) -> Optional[int]:
        """The node ``token`` joins as (None: it does not; see the module docstring)."""
        kids = self.children(parent)
        if self.full or len(kids) >= self.width or any(self.tokens[k - 1] == token for k in kids):
            return None
        gain = self.policy.branch(self.main_confs, self.extra, self.path(parent), conf, self.source, main=not kids)
        if gain is None:
            return None
        self.gain += gain
        self.rows += 1
        return self._add(token, conf, parent)

    @property
    def tree(self) -> Optional[TokenTree]:
        t = TokenTree(tuple(self.parents))
        return None if t.is_chain else t

    def slots(self, root: int) -> Optional[TreeSlots]:
        t = self.tree
        return None if t is None else TreeSlots(root, t)
