"""What a drafter of a given skill can buy on a given engine: tokens/s against greedy decoding under ideal policies.

A pure per-position cost model over teacher-forced positions (the prompt and greedy answer run once, every answer
position t gives the drafter's guess from the features at t and the verifier's token there). Costs are in units of
one plain greedy step, measured by ``python -m scripts.profile block`` on the same engine and exit layer:

    draft  one self-drafted token: the shallow pass and the drafter head
    row    one more row in the verify pass (the slope of deep(n) over n = 1..7)

A verify pass costs 1 and yields one verifier token; every draft that is tried costs ``draft`` and every draft that is
verified costs ``row`` on top; an accepted draft is a token that needs no pass of its own. So position t costs

    not drafted                       1
    drafted, verified, agreed         draft + row
    drafted, verified, disagreed      draft + row + 1
    drafted, not verified             draft + 1         (the drafter's own confidence declined it)

and the speed against greedy is positions / total cost. Nothing else is counted (no Python, no gate, no trainer), and
every threshold is the best one for the very data it is scored on, so each figure is a ceiling for its policy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import UserError
from kangaroo.drafters.memory import MemoryDrafter
from kangaroo.drafters.ngram import NGramDrafter


@dataclass(frozen=True)
class StepCosts:
    """One self-drafted token and one verified row, as shares of a plain greedy step. A lookup-drafted token's row
    runs the shallow layers too (a self-drafted one ran them while drafting): ``lookup_row``, by default ``row``."""
    draft: float
    row: float
    lookup_row: float | None = None

    def __post_init__(self):
        if self.lookup_row is None:
            object.__setattr__(self, "lookup_row", self.row)
        if not (self.draft >= 0 and self.row >= 0 and self.lookup_row >= 0):
            raise ValueError(f"draft and row costs must be >= 0, got {self.draft}, {self.row}, {self.lookup_row}")

    def with_shallow_rows(self, layers: int, exit_layer: int) -> "StepCosts":
        """``lookup_row`` as ``row`` (the deep layers' row) scaled to all ``layers`` layers."""
        return StepCosts(self.draft, self.row, self.row * layers / (layers - exit_layer))

    @classmethod
    def from_profile(cls, costs: dict) -> "StepCosts":
        """From ``block_costs.json``'s ``costs``: the cheapest drafted token its table measured (shallow pass and head,
        the most favourable vocabulary and precision) and a verified row, the least-squares slope of deep(n) over
        the widths n it timed (one width's difference, deep(2) - deep(1), is as noisy as two timings), over
        ``ar_ms``."""
        ar = costs["ar_ms"]
        token = min(d["token_ms"] for d in costs["draft"])
        n = torch.tensor([float(k) for k in costs["deep_ms"]], dtype=torch.float64)
        ms = torch.tensor(list(costs["deep_ms"].values()), dtype=torch.float64)
        slope = float(((n - n.mean()) * (ms - ms.mean())).sum() / ((n - n.mean()) ** 2).sum())
        return cls(draft=token / ar, row=slope / ar)

    @classmethod
    def from_file(cls, path: str | Path) -> "StepCosts":
        """``from_profile`` over a ``block_costs.json``; a missing or foreign file is one clear line."""
        try:
            return cls.from_profile(json.loads(Path(path).read_text())["costs"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--costs {path}: not a block_costs.json of the block profile "
                            f"({type(e).__name__}: {e}); run python -m scripts.profile block --out DIR "
                            "and pass DIR/block_costs.json") from None


def position_cost(correct: torch.Tensor, drafted: torch.Tensor, verified: torch.Tensor, c: StepCosts) -> torch.Tensor:
    """What each position costs under one policy: ``drafted`` and ``verified`` are bool masks (verified implies
    drafted), ``correct`` whether the drafter agreed with the verifier there."""
    agreed = verified & correct
    return drafted.double() * c.draft + verified.double() * c.row + (~agreed).double()


def speed(correct: torch.Tensor, drafted: torch.Tensor, verified: torch.Tensor, c: StepCosts) -> float:
    """Positions per unit of greedy time for one policy (``position_cost``)."""
    return float(len(correct) / position_cost(correct, drafted, verified, c).sum())


def prefill_steps(prompt_tokens: list[int], new_tokens: list[int], wall_s: list[float]) -> torch.Tensor:
    """Each question's prefill in greedy steps, from a greedy run's own wall times: the least-squares fit
    wall = d * new tokens + p * prompt tokens + e over the questions, then (p * prompt tokens + e) / d, at least 0."""
    L, N = (torch.tensor(x, dtype=torch.float64) for x in (prompt_tokens, new_tokens))
    X = torch.stack([N, L, torch.ones_like(N)], 1)
    d, p, e = torch.linalg.lstsq(X, torch.tensor(wall_s, dtype=torch.float64)[:, None]).solution.squeeze(1).tolist()
    return ((p * L + e) / d).clamp(min=0)


def speedup_with_prefill(cost: torch.Tensor, lengths: list[int], prefill: torch.Tensor) -> float:
    """Spec-Bench's speed.py with each question's prefill (in steps) added to both sides: the mean over questions of
    new tokens / time, over the same for greedy decoding (a position costs 1 there); ``lengths``: positions per
    question, in ``cost``'s order."""
    n = torch.tensor(lengths, dtype=torch.float64)
    spent = torch.stack([x.sum() for x in torch.split(cost, lengths)])
    return float((n / (prefill + spent)).mean() / (n / (prefill + n)).mean())


def best_threshold(score: torch.Tensor, correct: torch.Tensor, c: StepCosts, after_draft: bool) -> tuple[float, float]:
    """The best policy 'use the draft where ``score`` >= s' over every s in the data: (speed, s). ``after_draft``:
    the score is the drafter's own confidence, so every position pays for the draft and the threshold decides only
    the verify row; else the score is known before drafting and decides both."""
    order = torch.argsort(score, descending=True)
    s, ok = score[order].double(), correct[order].double()
    n = len(s)
    k = torch.arange(1, n + 1, dtype=torch.float64)  # positions taken: the k highest scores
    hits = torch.cumsum(ok, 0)
    taken = k * (c.draft + c.row) if not after_draft else n * c.draft + k * c.row
    cost = taken + (n - hits)
    # a cut only between distinct scores; taking none is the last candidate
    last = torch.ones(n, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    speeds = torch.where(last, n / cost, torch.zeros_like(cost))
    none = n / (n + (n * c.draft if after_draft else 0.0))
    i = int(torch.argmax(speeds))
    if float(speeds[i]) <= none:
        return none, float("inf")
    return float(speeds[i]), float(s[i])


def needed_agreement(target: float, c: StepCosts, after_draft: bool) -> float:
    """The agreement a drafter needs for ``target`` with a perfect decision (only agreeing drafts are used; when
    ``after_draft`` every position still pays for the draft). Above 1: out of reach whatever the skill."""
    # cost per position (1 - p) + p * (draft + row) [+ (1 - p) * draft] must be <= 1 / target
    if after_draft:
        return (1 + c.draft - 1 / target) / (1 - c.row)
    return (1 - 1 / target) / (1 - c.draft - c.row) if c.draft + c.row < 1 else float("inf")


def policy_table(conf: torch.Tensor, correct: torch.Tensor, correct2: torch.Tensor, before: torch.Tensor,
                 c: StepCosts) -> dict:
    """Speed against greedy under each policy. ``conf``: the drafter's softmax top-1 probability; ``correct2``: the
    verifier's token among the drafter's top 2; ``before``: a signal known before drafting (the verifier's own top-1
    probability at the previous position)."""
    every = torch.ones_like(correct)
    two = StepCosts(c.draft, 2 * c.row)
    return {
        "agreement top-1": float(correct.float().mean()),
        "agreement top-2": float(correct2.float().mean()),
        "always draft one": speed(correct, every, every, c),
        "drafter confidence decides the row": best_threshold(conf, correct, c, after_draft=True)[0],
        "verifier's last confidence decides the draft": best_threshold(before, correct, c, after_draft=False)[0],
        "top-2 tree, always": speed(correct2, every, every, two),
        "top-2 tree, drafter confidence decides": best_threshold(conf, correct2, two, after_draft=True)[0],
        "foresight: only agreeing drafts": foresight([(correct, c.draft + c.row)]),
    }


def lookup_agreement(pairs: list[tuple[list[int], list[int]]], ngram_min: int = 1, ngram_max: int = 3) -> dict:
    """Per position of each (prompt, greedy output), in order, for prompt lookup (``ngram``) and the memory of
    earlier outputs (``memory``, holding the outputs before this one), the drafters themselves at their defaults:
    (is the first token it would draft there the greedy token, that token's confidence or -1 where it drafts none)."""
    drafters = {"ngram": NGramDrafter(1, ngram_min, ngram_max), "memory": MemoryDrafter(1)}
    got = {name: ([], []) for name in drafters}
    for prompt, output in pairs:
        for d in drafters.values():
            d.begin(list(prompt))
        for t in range(len(output)):
            history = list(prompt) + list(output[:t])
            for name, d in drafters.items():
                tokens, conf = d.lookup(history)
                got[name][0].append(tokens[:1] == [output[t]])
                got[name][1].append(conf[0] if tokens else -1.0)
        for d in drafters.values():
            d.end(list(output))
    return {name: (torch.tensor(ok, dtype=torch.bool), torch.tensor(conf, dtype=torch.float64))
            for name, (ok, conf) in got.items()}


def foresight_cost(sources: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """Perfect decisions over several drafters: a position costs the cheapest price among the drafters that agree
    there (a lookup drafter's price is its verified row, the self-drafter's the draft and the row), else 1."""
    cost = torch.ones(len(sources[0][0]), dtype=torch.float64)
    for correct, price in sources:
        cost = torch.where(correct, cost.clamp(max=price), cost)
    return cost


def foresight(sources: list[tuple[torch.Tensor, float]]) -> float:
    """Positions per unit of greedy time under ``foresight_cost``."""
    return float(len(sources[0][0]) / foresight_cost(sources).sum())


def source_table(correct: torch.Tensor, lookups: dict, c: StepCosts, prefill: tuple | None = None) -> dict:
    """The self-drafter's agreement (``correct``) beside the lookups' (``lookup_agreement``), the foresight ceiling
    of each alone, of the two lookups and of all three (the deployed chain ngram,memory,self), and the lookups as the
    chain runs them (n-gram where it drafts, else the memory) under the best threshold on their own confidence.
    ``prefill``: (positions per question, prefill steps per question): those speeds with prefill included too."""
    ok = {"self": correct, **{name: m for name, (m, _) in lookups.items()}}
    price = {name: c.lookup_row for name in lookups} | {"self": c.draft + c.row}
    table = {f"agreement {n}": float(m.float().mean()) for n, m in ok.items()}
    table["agreement any"] = float(torch.stack(list(ok.values())).any(0).float().mean())
    costs = {f"foresight: {' + '.join(g)}": foresight_cost([(ok[n], price[n]) for n in g])
             for g in [[n] for n in ok] + [["ngram", "memory"], list(ok)]}
    (ng_ok, ng_conf), (mem_ok, mem_conf) = lookups["ngram"], lookups["memory"]
    drafts = ng_conf >= 0
    chain_ok, chain_conf = torch.where(drafts, ng_ok, mem_ok), torch.where(drafts, ng_conf, mem_conf)
    lookup_c = StepCosts(0.0, c.lookup_row)
    _, s = best_threshold(chain_conf, chain_ok, lookup_c, after_draft=False)
    take = chain_conf >= s
    costs["lookups: their confidence decides"] = position_cost(chain_ok, take, take, lookup_c)
    for name, cost in costs.items():
        table[name] = float(len(cost) / cost.sum())
        if prefill is not None:
            table[f"{name}, prefill included"] = speedup_with_prefill(cost, *prefill)
    return table
