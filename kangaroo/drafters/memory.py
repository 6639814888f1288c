"""The memory drafter: drafts what followed the end of the history in the outputs of earlier requests of the run
(``SuffixMemory``, shared), and adds each finished output to that memory. The memory is shared; this drafter
is the per-sequence side (its policy and counters; the history comes with each call), so a server keeps one
memory and one drafter, or chain, per concurrent sequence."""
from __future__ import annotations

from kangaroo.draft_policy import DraftPolicy
from kangaroo.drafters.lookup import LookupDrafter, match_confidence
from kangaroo.drafters.suffix_memory import SuffixMemory


class MemoryDrafter(LookupDrafter):
    name = "memory"

    def __init__(self, steps: int = 6, memory: SuffixMemory | None = None, policy: DraftPolicy | None = None):
        super().__init__(steps, policy)
        self.memory = memory if memory is not None else SuffixMemory()

    def lookup(self, history: list[int]) -> tuple[list[int], list[float]]:
        c = self.memory.lookup(history, self.steps)
        return c.tokens, [match_confidence(c.match + i, h, t) for i, (h, t) in enumerate(zip(c.hits, c.totals))]

    def end(self, output: list[int]) -> None:
        self.memory.add(output)

    def metadata(self) -> dict:
        return {**super().metadata(), "memory": self.memory.metadata()}
