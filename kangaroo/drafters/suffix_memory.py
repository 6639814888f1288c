"""The outputs of earlier requests, shared by the sequences of a run: a bounded suffix index the memory drafter
matches the current history against (SuffixDecoding, arXiv 2411.04975;
its speculation tree where a drafter drafts trees).

    add(tokens)            a finished sequence's output joins the memory; the oldest sequences are evicted first
    lookup(history, k)     the longest suffix of ``history`` (max_match down to min_match tokens) that occurred in the
                           memory, then, walking on from its latest ``max_occurrences`` occurrences, the most frequent
                           next token (ties: the most recent), k times: a ``Continuation`` with, for each token, how
                           many of the occurrences still followed went on with it (hits) out of how many (total)
    lookup_tree(history, k, width)   the same match, then SuffixDecoding's speculation tree: at each node its
                           ``width`` most frequent next tokens; the main line (the most frequent each time, what
                           ``lookup`` walks) to depth k first, then the other nodes best path score (the product of
                           hits / total along the path) first, up to k * width nodes (``SpecNode``s, parents first)

This is the walk down a suffix tree of the memory from the node of the matched suffix, along the most frequent child
(or, for ``lookup_tree``, its ``width`` most frequent children), with each child's count over its parent's
(SuffixDecoding's path score), the tree depth bounded by max_match + k. Stored as hash chains (zlib's, per n in
min_match..max_match): the kept sequences concatenated with a separator, for each n-gram (by hash) the latest
position right after it, and for each position the one before after the same n-gram; a lookup checks each
occurrence's tokens, so a hash collision costs nothing but a step.
Plain ints and arrays only: the garbage collector has no object per entry to traverse.

Bounded: at most ``max_tokens`` tokens are kept (a longer sequence keeps its last max_tokens), and the index holds
one chain link per kept token and n, and at most one key per kept token and n. Before an output would take the
memory past max_tokens, the oldest sequences are evicted: their slots are the first of the arrays, and an n-gram
whose latest occurrence they held leaves the index; eviction costs what indexing them cost, with no rebuild.

Shared, thread-safe: one lock around ``add`` and ``lookup``, and a lookup returns copies. The memory knows nothing of
the sequences in flight; each keeps its own history (its ``MemoryDrafter``), so concurrent sequences share only
the outputs that have finished.
"""
from __future__ import annotations

import heapq
import threading
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field

SEP = -1  # between sequences: no n-gram spans it, no continuation crosses it


@dataclass
class Continuation:
    tokens: list[int] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)     # occurrences that went on with tokens[i]
    totals: list[int] = field(default_factory=list)   # occurrences followed up to tokens[i] (ended ones included)
    match: int = 0                                    # length of the matched suffix (0: none)


@dataclass
class SpecNode:
    token: int
    parent: int   # the node it follows (an index of the list, before it), -1: the matched suffix
    hits: int     # occurrences that went on with it
    total: int    # occurrences followed up to its parent
    depth: int    # 1: right after the suffix


class SuffixMemory:
    def __init__(self, max_tokens: int = 65536, min_match: int = 1, max_match: int = 6, max_occurrences: int = 64):
        if not 1 <= min_match <= max_match or max_tokens < 1 or max_occurrences < 1:
            raise ValueError(f"need 1 <= min_match <= max_match, max_tokens >= 1, max_occurrences >= 1; got "
                             f"{min_match}, {max_match}, {max_tokens}, {max_occurrences}")
        self.max_tokens, self.min_match, self.max_match = max_tokens, min_match, max_match
        self.max_occurrences = max_occurrences
        self._lock = threading.Lock()
        self._lengths: deque[int] = deque()   # the kept sequences' lengths, oldest first
        self._tokens = array("q")            # the kept sequences, each followed by SEP; [0] is at position _base
        self._base = 0
        sizes = range(min_match, max_match + 1)
        self._heads: dict[int, dict[int, int]] = {n: {} for n in sizes}  # n -> n-gram hash -> latest position
        self._prev = {n: array("q") for n in sizes}  # n -> per position: the one before after that n-gram, or -1
        self.size = 0                    # tokens kept
        self.added = self.evicted = 0    # sequences

    def __len__(self) -> int:
        return self.size

    def footprint(self) -> dict:
        """What the memory holds: tokens and sequences kept, slots (tokens and separators, each with a chain link
        per n) and the n-grams indexed (keys)."""
        with self._lock:
            return {"tokens": self.size, "sequences": len(self._lengths), "slots": len(self._tokens),
                    "keys": sum(len(h) for h in self._heads.values())}

    def add(self, tokens: list[int]) -> None:
        seq = [int(t) for t in tokens][-self.max_tokens:]
        if len(seq) <= self.min_match:  # no n-gram with a continuation
            return
        with self._lock:
            while self._lengths and self.size + len(seq) > self.max_tokens:
                self._evict_oldest()
            start = len(self._tokens)
            self._tokens.extend(seq + [SEP])
            for prev in self._prev.values():
                prev.extend([-1] * (len(seq) + 1))
            for e, n, key in self._ngrams(seq):
                heads = self._heads[n]
                self._prev[n][start + e] = heads.get(key, -1)
                heads[key] = self._base + start + e
            self._lengths.append(len(seq))
            self.size += len(seq)
            self.added += 1

    def _evict_oldest(self) -> None:
        length = self._lengths.popleft()
        for e, n, key in self._ngrams(self._tokens[:length].tolist()):
            if self._heads[n].get(key) == self._base + e:  # no later occurrence: the n-gram leaves the memory
                del self._heads[n][key]
        del self._tokens[:length + 1]
        for prev in self._prev.values():
            del prev[:length + 1]
        self._base += length + 1
        self.size -= length
        self.evicted += 1

    def _ngrams(self, seq: list[int]):
        """(e, n, hash of seq[e-n:e]) for every continuation e inside ``seq`` and n = min_match..max_match."""
        for e in range(self.min_match, len(seq)):
            for n in range(self.min_match, min(self.max_match, e) + 1):
                yield e, n, hash(tuple(seq[e - n:e]))

    def _occurrences(self, suffix: list[int]) -> list[int]:
        """The positions right after the latest ``max_occurrences`` occurrences of ``suffix``, oldest first."""
        n, out = len(suffix), []
        p = self._heads[n].get(hash(tuple(suffix)), -1)
        while p >= self._base and len(out) < self.max_occurrences:
            i = p - self._base
            if self._tokens[i - n:i].tolist() == suffix:  # skips a hash collision's occurrence
                out.append(p)
            p = self._prev[n][i]
        return out[::-1]

    def lookup(self, history: list[int], k: int) -> Continuation:
        with self._lock:
            for n in range(min(self.max_match, len(history)), self.min_match - 1, -1):
                found = self._occurrences(list(history[-n:]))
                if found:
                    return self._walk(found, n, k)
        return Continuation()

    def _walk(self, alive: list[int], match: int, k: int) -> Continuation:
        out = Continuation(match=match)
        for _ in range(k):
            counts = Counter(self._tokens[p - self._base] for p in reversed(alive))  # the latest first wins ties
            total = len(alive)
            counts.pop(SEP, None)
            if not counts:
                break
            best, hits = counts.most_common(1)[0]
            out.tokens.append(best)
            out.hits.append(hits)
            out.totals.append(total)
            alive = [p + 1 for p in alive if self._tokens[p - self._base] == best]
        return out

    def lookup_tree(self, history: list[int], k: int, width: int) -> tuple[list[SpecNode], int]:
        """The speculation tree after the longest matched suffix (module docstring), and the match's length."""
        with self._lock:
            for n in range(min(self.max_match, len(history)), self.min_match - 1, -1):
                found = self._occurrences(list(history[-n:]))
                if found:
                    return self._grow(found, k, width), n
        return [], 0

    def _grow(self, alive: list[int], k: int, width: int) -> list[SpecNode]:
        out: list[SpecNode] = []
        heap = [(-2.0, 0, -1, alive, 1.0, True)]   # (priority: the main line first, order, node, alive, score, main)
        while heap and len(out) < k * width:
            _, _, node, alive, score, main = heapq.heappop(heap)
            depth = 0 if node < 0 else out[node].depth
            if depth >= k:
                continue
            counts = Counter(self._tokens[p - self._base] for p in reversed(alive))  # the latest first wins ties
            total = len(alive)
            counts.pop(SEP, None)
            for rank, (tok, hits) in enumerate(counts.most_common(width)[:k * width - len(out)]):
                out.append(SpecNode(tok, node, hits, total, depth + 1))
                child = [p + 1 for p in alive if self._tokens[p - self._base] == tok]
                s = score * hits / total
                heapq.heappush(heap, (-2.0 if main and not rank else -s, len(out), len(out) - 1, child, s,
                                      main and not rank))
        return out

    def metadata(self) -> dict:
        return {"max_tokens": self.max_tokens, "min_match": self.min_match, "max_match": self.max_match,
                "max_occurrences": self.max_occurrences}
