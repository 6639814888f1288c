"""Greedy decoding of the same prompts, interleaved with the run, for ``--compare-greedy``: the run's decode tokens/s
against plain greedy decoding at the same thread count, measured in the same process and the same minutes (so a
shared machine's drift hits both), and a token-for-token check of every output against greedy. Under sampling
(``--temperature`` > 0) the reference is plain sampling with the same params and seed, which every output equals.

    ref = GreedyReference(lm, max_new_tokens, eos, device, sampling)
    run_questions(..., after_turn=ref.after_turn)   # after each timed decode, outside its time: greedy, timed alike
    ref.summary(); ref.write(path)

Decode time is the driver's per-turn wall time (prefill, drafting, verifying, the DVI bookkeeping of each block;
an inline trainer's steps too, a background trainer's not: it runs on its own thread, during greedy turns as well).
"""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from kangaroo.cache_pool import ReusableCaches, greedy_cache_factory
from kangaroo.greedy import greedy_decode
from kangaroo.sampling import GREEDY, SamplingParams
from kangaroo.timing import timed


class GreedyReference:
    def __init__(self, lm, max_new_tokens: int, eos: set[int], device, sampling: SamplingParams = GREEDY):
        self.lm, self.max_new_tokens, self.eos, self.device = lm, max_new_tokens, eos, device
        self.sampling = sampling
        self.pool = ReusableCaches(greedy_cache_factory(lm))
        self.equal = 0
        self.mismatches: list[int] = []   # turn numbers whose output differs from greedy (a bug: must stay empty)
        # every turn, in order: (decode tokens, decode s, greedy tokens, greedy s); the totals are their sums
        self.per_turn: list[tuple[int, float, int, float]] = []

    def warm(self, ids) -> None:
        """One untimed greedy decode (lazy initialisation is not charged to the first turn)."""
        greedy_decode(self.lm, ids, 2, self.eos, self.pool, self.sampling)

    def after_turn(self, ids, res, wall: float) -> None:
        ref, greedy_wall = timed(lambda: greedy_decode(self.lm, ids, self.max_new_tokens, self.eos, self.pool,
                                                       self.sampling), self.device)
        self.per_turn.append((len(res.tokens), wall, len(ref.tokens), greedy_wall))
        if res.tokens == ref.tokens:
            self.equal += 1
        else:
            self.mismatches.append(len(self.per_turn))

    def summary(self) -> dict:
        dec_n, dec_s, gre_n, gre_s = (sum(t[i] for t in self.per_turn) for i in range(4))
        dec = dec_n / dec_s if dec_s else None
        gre = gre_n / gre_s if gre_s else None
        return {"turns": len(self.per_turn), "equal_to_greedy": self.equal, "mismatched_turns": self.mismatches[:20],
                "decode_tokens": dec_n, "decode_s": round(dec_s, 3),
                "greedy_tokens": gre_n, "greedy_s": round(gre_s, 3),
                "decode_tokens_per_s": dec, "greedy_tokens_per_s": gre,
                "speedup": dec / gre if dec and gre else None, "speedup_by_quarter": self.by_quarter(),
                "reference": "greedy" if self.sampling.greedy else {"sampled": self.sampling.metadata()}}

    def by_quarter(self) -> list[float | None]:
        """Decode against greedy over each quarter of the turns, in order (the online run's curve: the drafter
        learning as it serves); equal tokens, so the ratio of greedy's time to the decode's."""
        n, out = len(self.per_turn), []
        for q in range(4):
            part = self.per_turn[q * n // 4:(q + 1) * n // 4]
            dec, gre = sum(t[1] for t in part), sum(t[3] for t in part)
            out.append(round(gre / dec, 4) if dec and gre else None)
        return out

    def line(self) -> str:
        s = self.summary()
        if not s["turns"]:
            return "[greedy-reference] no turn decoded"
        plain = "greedy" if self.sampling.greedy else "plain sampling (same seed)"
        return (f"[greedy-reference] decode {s['decode_tokens_per_s']:.2f} tok/s vs {plain} "
                f"{s['greedy_tokens_per_s']:.2f} tok/s on the same {s['turns']} prompts = {s['speedup']:.3f}x; "
                f"outputs equal to {plain}: {s['equal_to_greedy']}/{s['turns']}")

    def write(self, path) -> Path:
        return atomic_write_text(path, json.dumps(self.summary(), indent=1))
