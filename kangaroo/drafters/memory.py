"""The memory drafter: drafts what followed the end of the history in the outputs of earlier requests of the run
(``SuffixMemory``, shared), and adds each finished output to that memory. The memory is shared; this drafter
is the per-sequence side (its policy and counters; the history comes with each call), so a server keeps one
memory and one drafter, or chain, per concurrent sequence. As a tree (``width`` > 1), SuffixDecoding's speculation
tree: the ``width`` most frequent continuations at each node (``SuffixMemory.lookup_tree``)."""
from __future__ import annotations

from kangaroo.draft_policy import DraftPolicy
from kangaroo.drafters.lookup import Candidate, LookupDrafter, match_confidence
from kangaroo.drafters.suffix_memory import SuffixMemory


class MemoryDrafter(LookupDrafter):
    name = "memory"

    def __init__(self, steps: int = 6, memory: SuffixMemory | None = None, policy: DraftPolicy | None = None,
                 width: int = 1):
        super().__init__(steps, policy, width)
        self.memory = memory if memory is not None else SuffixMemory()

    def lookup(self, history: list[int]) -> tuple[list[int], list[float]]:
        c = self.memory.lookup(history, self.steps)
        return c.tokens, [match_confidence(c.match + i, h, t) for i, (h, t) in enumerate(zip(c.hits, c.totals))]

    def lookup_tree(self, history: list[int]) -> list[Candidate]:
        nodes, match = self.memory.lookup_tree(history, self.steps, self.width)
        return [Candidate(n.token, n.parent, match_confidence(match + n.depth - 1, n.hits, n.total)) for n in nodes]

    def end(self, output: list[int]) -> None:
        self.memory.add(output)

    def metadata(self) -> dict:
        return {**super().metadata(), "memory": self.memory.metadata()}
