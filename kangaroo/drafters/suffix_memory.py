"""The outputs of earlier requests, shared by the sequences of a run: a bounded suffix index the memory drafter
matches the current history against (SuffixDecoding, arXiv 2411.04975; one chain per block, no speculation tree).

    add(tokens)            a finished sequence's output joins the memory; the oldest sequences are evicted first
    lookup(history, k)     the longest suffix of ``history`` (max_match down to min_match tokens) that occurred in the
                           memory, then, walking on from its latest ``max_occurrences`` occurrences, the most frequent
                           next token (ties: the most recent), k times: a ``Continuation`` with, for each token, how
                           many of the occurrences still followed went on with it (hits) out of how many (total)

This is the walk down a suffix tree of the memory from the node of the matched suffix, along the most frequent
child, with each child's count over its parent's (SuffixDecoding's path score), the tree depth bounded by
max_match + k. Stored as the kept sequences, concatenated with a separator, and for every n in
min_match..max_match a dict from each n-gram to the positions right after its occurrences, in order.

Bounded: at most ``max_tokens`` tokens are kept (a longer sequence keeps its last max_tokens) and the index holds at
most max_match - min_match + 1 entries per kept token. When an output would take the memory past max_tokens, the
oldest sequences are evicted down to 3/4 of it and the index is rebuilt (amortised O(max_match) per stored token).

Shared, thread-safe: one lock around ``add`` and ``lookup``, and a lookup returns copies. The memory knows nothing of
the sequences in flight; each keeps its own history (its ``MemoryDrafter``), so concurrent sequences share only
the outputs that have finished.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

SEP = -1  # between sequences: no n-gram spans it, no continuation crosses it


@dataclass
class Continuation:
    tokens: list[int] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)     # occurrences that went on with tokens[i]
    totals: list[int] = field(default_factory=list)   # occurrences followed up to tokens[i] (ended ones included)
    match: int = 0                                    # length of the matched suffix (0: none)


class SuffixMemory:
    def __init__(self, max_tokens: int = 65536, min_match: int = 2, max_match: int = 6, max_occurrences: int = 64):
        if not 1 <= min_match <= max_match or max_tokens < 1 or max_occurrences < 1:
            raise ValueError(f"need 1 <= min_match <= max_match, max_tokens >= 1, max_occurrences >= 1; got "
                             f"{min_match}, {max_match}, {max_tokens}, {max_occurrences}")
        self.max_tokens, self.min_match, self.max_match = max_tokens, min_match, max_match
        self.max_occurrences = max_occurrences
        self._lock = threading.Lock()
        self._seqs: deque[list[int]] = deque()
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], list[int]] = {}
        self.size = 0                    # tokens kept
        self.added = self.evicted = 0    # sequences

    def __len__(self) -> int:
        return self.size

    @property
    def entries(self) -> int:
        """Positions held by the index (the bounded part of its memory)."""
        with self._lock:
            return sum(len(p) for p in self._index.values())

    def add(self, tokens: list[int]) -> None:
        seq = [int(t) for t in tokens][-self.max_tokens:]
        if len(seq) <= self.min_match:  # no n-gram with a continuation
            return
        with self._lock:
            self._seqs.append(seq)
            self.size += len(seq)
            self.added += 1
            if self.size > self.max_tokens:
                self._evict()
            else:
                self._index_sequence(seq)

    def _evict(self) -> None:
        keep = self.max_tokens * 3 // 4
        while self.size > keep and len(self._seqs) > 1:
            self.size -= len(self._seqs.popleft())
            self.evicted += 1
        self._tokens, self._index = [], {}
        for seq in self._seqs:
            self._index_sequence(seq)

    def _index_sequence(self, seq: list[int]) -> None:
        start = len(self._tokens)
        self._tokens.extend(seq)
        self._tokens.append(SEP)
        toks, sizes = self._tokens, range(self.min_match, self.max_match + 1)
        for e in range(start + self.min_match, start + len(seq)):  # e: a continuation inside the sequence
            for n in sizes:
                if e - n < start:
                    break
                self._index.setdefault(tuple(toks[e - n:e]), []).append(e)

    def lookup(self, history: list[int], k: int) -> Continuation:
        with self._lock:
            for n in range(min(self.max_match, len(history)), self.min_match - 1, -1):
                found = self._index.get(tuple(history[-n:]))
                if found:
                    return self._walk(found[-self.max_occurrences:], n, k)
        return Continuation()

    def _walk(self, alive: list[int], match: int, k: int) -> Continuation:
        out = Continuation(match=match)
        for _ in range(k):
            counts = Counter(self._tokens[p] for p in reversed(alive))  # the most recent first: wins ties
            total = len(alive)
            counts.pop(SEP, None)
            if not counts:
                break
            best, hits = counts.most_common(1)[0]
            out.tokens.append(best)
            out.hits.append(hits)
            out.totals.append(total)
            alive = [p + 1 for p in alive if self._tokens[p] == best]
        return out

    def metadata(self) -> dict:
        return {"max_tokens": self.max_tokens, "min_match": self.min_match, "max_match": self.max_match,
                "max_occurrences": self.max_occurrences}
