"""What each drafter did, counted block by block: the one bookkeeping the chain keeps for its drafters
(``DrafterChain.by_source``) and the online metrics keep from the blocks they log (``dvi/metrics.py``).

    calls       times the drafter was asked to draft (a chain asks its drafters in order until one proposes)
    draft_ms    the time of those calls, proposals that came to nothing included
    blocks      verifier passes over a draft it made (at least one drafted token: it won the block)
    drafted, accepted, committed, verify_ms      over those blocks (committed as verified: the last block of a
                                                 sequence may commit more than max_new_tokens leaves room for)

A block that drafted nothing is a plain greedy step; its source is ``NONE``. committed / blocks is the tokens
per verifier pass of that source (Spec-Bench's accepted length).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Iterable

from kangaroo.blocks import NONE

__all__ = ["NONE", "SOURCE_COLS", "DrafterCounters", "merged", "since", "snapshot", "source_rows", "source_summary",
           "tally"]

# source_rows' columns: the counters, and the block share, tokens per verifier pass and time share they give
SOURCE_COLS = ("source", "blocks", "block_share", "committed_per_pass", "drafted", "accepted", "committed", "calls",
               "draft_ms", "verify_ms", "time_share")


@dataclass
class DrafterCounters:
    calls: int = 0
    draft_ms: float = 0.0
    blocks: int = 0
    drafted: int = 0
    accepted: int = 0
    committed: int = 0
    verify_ms: float = 0.0

    def asked(self, ms: float) -> None:
        self.calls += 1
        self.draft_ms += ms

    def settle(self, drafted: int, accepted: int, committed: int, verify_ms: float) -> None:
        self.blocks += 1
        self.drafted += drafted
        self.accepted += accepted
        self.committed += committed
        self.verify_ms += verify_ms

    def minus(self, other: "DrafterCounters") -> "DrafterCounters":
        """What was counted since ``other`` (an earlier copy of these counters)."""
        return DrafterCounters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def plus(self, other: "DrafterCounters") -> "DrafterCounters":
        return DrafterCounters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict:
        return asdict(self)


def tally(counters: dict[str, DrafterCounters], source: str, tried_ms: dict[str, float], drafted: int,
          accepted: int, committed: int, verify_ms: float) -> None:
    """One block into ``counters`` (name -> counters; missing names are added): every drafter asked for it
    (``tried_ms``: name -> ms) made a call, and its ``source`` (``NONE`` if it drafted nothing) gets the block."""
    for name, ms in tried_ms.items():
        counters.setdefault(name, DrafterCounters()).asked(ms)
    counters.setdefault(source, DrafterCounters()).settle(drafted, accepted, committed, verify_ms)


def snapshot(counters: dict[str, DrafterCounters]) -> dict[str, DrafterCounters]:
    return {k: DrafterCounters(**v.as_dict()) for k, v in counters.items()}


def since(counters: dict[str, DrafterCounters], before: dict[str, DrafterCounters]) -> dict[str, dict]:
    """Per source, what was counted since the ``snapshot`` ``before`` (plain dicts, for records)."""
    return {k: v.minus(before.get(k, DrafterCounters())).as_dict() for k, v in counters.items()}


def merged(parts: Iterable[dict[str, dict]]) -> dict[str, DrafterCounters]:
    """Per source, the sum of several ``since`` results (first-seen source order)."""
    out: dict[str, DrafterCounters] = {}
    for part in parts:
        for name, d in part.items():
            out[name] = out.get(name, DrafterCounters()).plus(DrafterCounters(**d))
    return out


def source_rows(counters: dict[str, DrafterCounters]) -> list[dict]:
    """One row (``SOURCE_COLS``) per source that was asked or made a block: block_share = its blocks over all,
    committed_per_pass = committed / blocks, time_share = its draft + verify ms over all (None without data)."""
    blocks = sum(c.blocks for c in counters.values())
    ms = sum(c.draft_ms + c.verify_ms for c in counters.values())
    return [{**c.as_dict(), "source": name, "block_share": c.blocks / blocks if blocks else None,
             "committed_per_pass": c.committed / c.blocks if c.blocks else None,
             "time_share": (c.draft_ms + c.verify_ms) / ms if ms else None}
            for name, c in counters.items() if c.calls or c.blocks]


def source_summary(counters: dict[str, DrafterCounters]) -> str:
    """``ngram 31% x2.40, none 69% x1.00``: each source's share of the blocks and its tokens per verifier pass."""
    return ", ".join(f"{r['source']} {r['block_share']:.0%} x{r['committed_per_pass']:.2f}"
                     for r in source_rows(counters) if r["blocks"])
