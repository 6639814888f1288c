"""Whether a self probe can pay, decided before paying for it from what is already computed (SpecDec++-style).

A self probe runs the drafter head on hk of the block's first token x (the shallow pass of x is paid anyway: verify
needs it). It can pay only when the drafter's top-1 agrees with the verifier's next token: then a kept first draft
commits a token for a head call and one shallow pass instead of a whole step. Before the probe, these are known for
free:

    p_v     the verifier's probability of the token it just committed (the committed row of the last verify pass;
            its softmax is taken only when the gate is asked, by the engine's fused max + log-sum-exp); sampled,
            that token's probability under the tempered, truncated distribution it was sampled from
    recent  the self-drafter's recent agreement: an EMA of "the probe's top-1 was the verifier's token" (sampled:
            the probe's pick was the verifier's pick, the coupled rule)
    T       the sequence's sampling temperature (0 greedy): agreement falls as it rises

A logistic model over [1, logit p_v, logit recent, T], fit online by SGD on every probe's outcome (it starts as
q = recent), gives q = P(the probe's top-1 agrees). The gate lets the probe run when a block that sends its draft,
committing 1 + q tokens, has the better goodput than a plain block, both costed by the run's measured cost curve
(``threshold``); otherwise the block is a plain greedy step that paid nothing for the question (``declined_free``).
Every ``explore_every``-th block probes anyway, so a declined drafter that improves (online) is seen again. The
goodput policy keeps the final say over the candidate a probe produces (it sends it only if its calibrated
acceptance pays): the gate's label is the drafter's skill, known for every probe whether the candidate was sent or
not, so a pessimistic calibrator cannot starve the gate.
"""
from __future__ import annotations

import math

import torch

from kangaroo.sampling import GREEDY, token_prob

FEATURES = ("bias", "logit_p_verifier", "logit_recent", "temperature")


def _logit(p: float, eps: float = 1e-3) -> float:
    p = min(1 - eps, max(eps, p))
    return math.log(p / (1 - p))


def committed_prob(row: torch.Tensor) -> float:
    """The softmax probability of the top token of logits ``row`` [V] (the engine's fused kernel where it runs)."""
    from kangaroo import cpu_engine

    row = row.detach().reshape(1, -1)
    if row.device.type == "cpu" and row.dtype == torch.float32 and cpu_engine.extension() is not None:
        return float(cpu_engine.extension().softmax_top_k(row.contiguous(), 1)[1])
    return float(torch.softmax(row.float(), dim=-1).max())


class ProbeGate:
    def __init__(self, cost, learning: bool = False, lr: float = 0.05, prior: float = 0.3, ema: float = 0.9,
                 explore_every: int = 16):
        """``learning``: the drafter learns online, so a probe's outcome is also a training label (``threshold``)."""
        self.cost, self.learning, self.lr, self.ema, self.explore_every = cost, learning, lr, ema, explore_every
        self.w = [0.0, 0.0, 1.0, 0.0]  # start as q = recent agreement
        self.recent = prior
        self.sampling = GREEDY    # the sequence's sampling params (``sample_with``)
        self._row = None          # the committed row of the last verify pass (its softmax taken lazily)
        self._token = None        # the token committed from it
        self._pending = None      # features of the probe in flight
        self.since = 0            # blocks since the last probe
        self.probes = self.declined_free = self.explored = self.agreed = 0

    # ------------------------------------------------------------------------------ what is known for free
    def sample_with(self, params) -> None:
        self.sampling = params

    def note(self, block) -> None:
        """Every block, whoever drafted it: remember the verifier's row of the token it committed last."""
        self._row = block.verification.logits[block.accepted]
        self._token = None if self.sampling.greedy else block.verification.tokens[block.accepted]

    def features(self) -> list[float]:
        s = self.sampling
        if self._row is None:
            p_v = 0.5
        else:
            p_v = committed_prob(self._row) if s.greedy else token_prob(self._row, self._token, s)
        return [1.0, _logit(p_v), _logit(self.recent), 0.0 if s.greedy else s.temperature]

    def q(self, f: list[float]) -> float:
        z = sum(w * x for w, x in zip(self.w, f))
        return 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))

    def threshold(self) -> float:
        """The q at which a probe breaks even, by the goodput policy's own measure: a block that sends the probe's
        draft commits 1 + q tokens (with the ``batch_rows`` of other sequences, b + 1 + q) for ``block_ms(1)``
        (two shallow passes and head calls, one more verify row), a plain block 1 (b + 1) for a shallow pass and
        the verify pass; so q > (b + 1) (block_ms(1) / plain - 1). A rejected draft's verify row counts: on the
        Q4_1 engine it is ~20% of a step, so q must pass ~0.3.

        A drafter that learns online also gets a label from every probe (the verifier's accept / reject is its
        training tuple), so there the gate asks less: that an *agreeing* probe pays for its head call, q > head /
        (deep(1) - (deep(2) - deep(1))), ~0.1 (measured: with the stricter rule online the main job's probes fell
        from ~90% to 7% of the blocks and top1_agree from 0.21 to 0.18 at the same speed, runs/record_nov30)."""
        c = self.cost
        if self.learning:
            deep_extra = c.deep_ms[1] - c.deep_ms[0] if c.max_tokens > 1 else 0.0
            return c.head_ms / max(1e-6, c.deep_ms[0] - deep_extra)
        b = c.batch_rows
        plain = c.shallow_ms[0] + c.deep_at(b + 1)
        return (b + 1) * (c.block_ms(1, "self") / max(1e-6, plain) - 1)

    # ------------------------------------------------------------------------------ the decision and learning
    def should_probe(self) -> bool:
        self.since += 1
        f = self.features()
        pays = self.q(f) >= self.threshold()
        if pays or self.since >= self.explore_every:
            self.explored += int(not pays)
            self.since, self._pending = 0, f
            self.probes += 1
            return True
        self.declined_free += 1
        return False

    def learn(self, agreed: bool) -> None:
        """The outcome of the probe in flight: its top-1 was the verifier's token (or not)."""
        f, self._pending = self._pending, None
        if f is None:
            return
        y = float(agreed)
        g = self.q(f) - y  # d(log loss)/dz
        self.w = [w - self.lr * g * x for w, x in zip(self.w, f)]
        self.recent = self.ema * self.recent + (1 - self.ema) * y
        self.agreed += int(agreed)

    def counters(self) -> dict:
        return {"probes": self.probes, "declined_free": self.declined_free, "explored": self.explored,
                "agreed": self.agreed, "weights": [round(w, 3) for w in self.w]}


def gate_counters(drafter) -> dict:
    """The probe gates' counters of a drafter or a chain, by drafter name: those whose gate was asked ({} if none)."""
    out = {}
    for d in getattr(drafter, "drafters", [drafter]):
        gate = getattr(getattr(d, "policy", None), "gate", None)
        if gate is not None and gate.probes + gate.declined_free:
            out[d.name] = gate.counters()
    return out
