"""The n-gram drafter: prompt lookup over prompt + generated tokens (HF ``prompt_lookup_num_tokens``). The longest
n-gram (n from ngram_max down to ngram_min) ending the history that occurred before; its most recent earlier
occurrence's continuation is the draft, the i-th token with the confidence of a match of n + i - 1 tokens. As a tree
(``width`` > 1), the latest occurrence's continuation of each matched n, longest first, merged into a trie."""
from __future__ import annotations

from kangaroo.draft_policy import DraftPolicy
from kangaroo.drafters.lookup import Candidate, LookupDrafter, match_confidence, trie


class NGramIndex:
    """For each n, the latest end position e of every n-gram history[e-n:e] that has a continuation (e < len).
    Extended incrementally as the history grows (the history only ever grows by commits)."""

    def __init__(self, ngram_min: int, ngram_max: int):
        self.sizes = range(ngram_min, ngram_max + 1)
        self.ends: dict[int, dict[tuple, int]] = {n: {} for n in self.sizes}
        self.upto = 0  # end positions 1..upto are indexed

    def extend(self, history: list[int]) -> None:
        for e in range(self.upto + 1, len(history)):
            for n in self.sizes:
                if e >= n:
                    self.ends[n][tuple(history[e - n:e])] = e
        self.upto = max(self.upto, len(history) - 1)

    def lookup(self, history: list[int], k: int) -> tuple[list[int], int]:
        """Up to k tokens continuing the longest matched suffix n-gram, and that n (0: no match)."""
        return next(self.continuations(history, k), ([], 0))

    def continuations(self, history: list[int], k: int):
        """(up to k tokens continuing the latest occurrence of the suffix n-gram, n) for each matched n, longest
        first."""
        self.extend(history)
        for n in reversed(self.sizes):
            if len(history) < n:
                continue
            e = self.ends[n].get(tuple(history[-n:]))
            if e is not None:
                yield history[e:e + k], n


class NGramDrafter(LookupDrafter):
    name = "ngram"

    def __init__(self, steps: int = 6, ngram_min: int = 1, ngram_max: int = 3, policy: DraftPolicy | None = None,
                 width: int = 1):
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {ngram_min}, {ngram_max}")
        super().__init__(steps, policy, width)
        self.ngram_min, self.ngram_max = ngram_min, ngram_max
        self.index = NGramIndex(ngram_min, ngram_max)

    def begin(self, prompt: list[int]) -> None:
        self.index = NGramIndex(self.ngram_min, self.ngram_max)

    def lookup(self, history: list[int]) -> tuple[list[int], list[float]]:
        tokens, n = self.index.lookup(history, self.steps)
        return tokens, [match_confidence(n + i) for i in range(len(tokens))]

    def lookup_tree(self, history: list[int]) -> list[Candidate]:
        return trie([(tokens, [match_confidence(n + i) for i in range(len(tokens))])
                     for tokens, n in self.index.continuations(history, self.steps)])

    def metadata(self) -> dict:
        return {**super().metadata(), "ngram_min": self.ngram_min, "ngram_max": self.ngram_max}
