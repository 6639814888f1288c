"""The verify-cost curve a run measures on its own machine at startup (or reads from a file).

    shallow_ms[n-1]  shallow layers (+ adapter) over n new tokens            n = 1..steps+1
    deep_ms[n-1]     deep layers + final norm + the verifier's head over n   n = 1..steps+1
    head_ms          the drafter's proposal on one row (pruned or LoRA, as attached, in its precision: packed_head)
    feature_ms       the feature drafter's token: its layer on one entry and its head's proposal (0: none attached)

What a block drafting m tokens costs (``block_ms``):

    self  : (m+1) shallow_ms[0] + (m+1) head_ms + deep_ms[m]     (one shallow pass and one head call per token)
    ngram : shallow_ms[m] + deep_ms[m]                            (verify runs the shallow layers on the block)
    feature: m feature_ms + shallow_ms[m] + deep_ms[m]            (a layer and a head per drafted token)

A token tree's branches (``extra`` rows beside the m of its main line) add rows to the same passes: the verify pass
over m + 1 + extra rows, and for the self-drafter, whose branches ride along in its shallow passes, one shallow row
each (``shallow_row_ms``). ``row_ms``: what one more verified row costs, the least-squares slope of deep(n).

It is measured, never hard-coded: the curve depends on the machine, the thread count and the compute engine
(a faster multi-token verify makes longer drafts pay).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from kangaroo.packed_head import propose
from kangaroo.timing import elapsed_ms


@dataclass
class CostCurve:
    shallow_ms: list[float]
    deep_ms: list[float]
    head_ms: float
    batch_rows: int = 0  # rows of other sequences in the same verify pass (a server's batch; set per step)
    feature_ms: float = 0.0

    @property
    def max_tokens(self) -> int:
        return len(self.deep_ms)

    def block_ms(self, m: int, source: str = "self", extra: int = 0) -> float:
        """One block drafting m tokens (and ``extra`` tree branches), verified together with ``batch_rows`` rows of
        other sequences."""
        if extra:
            deep = self.deep_at(self.batch_rows + m + 1 + extra)
            if source == "self":
                return (m + 1) * (self.shallow_ms[0] + self.head_ms) + extra * self.shallow_row_ms + deep
            return _at(self.shallow_ms, m + 1 + extra) + deep
        n = min(m + 1, self.max_tokens)  # the drafter's own parts: beyond the measured range extended flat
        deep = self.deep_at(self.batch_rows + m + 1) if self.batch_rows else self.deep_ms[n - 1]
        if source == "self":
            return (m + 1) * (self.shallow_ms[0] + self.head_ms) + deep
        return self.shallow_ms[n - 1] + deep + (m * self.feature_ms if source == "feature" else 0.0)

    def deep_at(self, rows: int) -> float:
        """The verify pass over ``rows`` rows; past the measured range extended along its last step (a batch's
        pass is compute-bound: every row costs its FMAs)."""
        return _at(self.deep_ms, rows)

    @property
    def shallow_row_ms(self) -> float:
        """One more row in a shallow pass."""
        return max(0.0, _at(self.shallow_ms, 2) - self.shallow_ms[0])

    @property
    def row_ms(self) -> float:
        """One more verified row: the least-squares slope of deep(n) over the measured n (one difference alone is
        as noisy as two timings)."""
        n = self.max_tokens
        if n < 2:
            return self.deep_ms[0]
        mean_x, mean_y = (n + 1) / 2, sum(self.deep_ms) / n
        cov = sum((i + 1 - mean_x) * (y - mean_y) for i, y in enumerate(self.deep_ms))
        return max(0.0, cov / sum((i + 1 - mean_x) ** 2 for i in range(n)))

    def to_json(self, path) -> None:
        curve = {k: v for k, v in asdict(self).items() if k != "batch_rows"}  # the measurement, not a step's batch
        atomic_write_text(path, json.dumps(curve, indent=1))

    @classmethod
    def from_json(cls, path) -> "CostCurve":
        d = json.loads(Path(path).read_text())
        c = cls([float(x) for x in d["shallow_ms"]], [float(x) for x in d["deep_ms"]], float(d["head_ms"]),
                feature_ms=float(d.get("feature_ms", 0.0)))
        if not c.shallow_ms or len(c.shallow_ms) != len(c.deep_ms) or min(c.shallow_ms + c.deep_ms + [c.head_ms]) < 0:
            raise ValueError(f"{path}: shallow_ms and deep_ms must be equally long, non-empty, non-negative")
        return c


@torch.no_grad()
def measure_cost_curve(model, max_tokens: int, reps: int = 5, prefix: int = 32) -> CostCurve:
    """Median wall times over ``reps`` runs, after a ``prefix``-token context, for n = 1..max_tokens."""
    dev = model.device
    caches = model.new_caches(prefix + max_tokens + 2)
    ids = torch.arange(prefix, device=dev)[None] % model.config.vocab_size
    model.forward_deep(model.forward_shallow(ids, caches.shallow).h, caches.deep)
    shallow, deep, heads = [], [], []
    for n in range(1, max_tokens + 1):
        x = ids[:, :n]
        ts, td = [], []
        for _ in range(reps + 1):  # the first run is a warm-up
            out = {}
            ts.append(elapsed_ms(lambda: out.setdefault("s", model.forward_shallow(x, caches.shallow)), dev))
            td.append(elapsed_ms(lambda: model.verifier_logits(model.forward_deep(out["s"].h, caches.deep)).argmax(-1),
                                 dev))
            # the drafter's head as decoding meets it: after a verify pass has streamed the model through the caches,
            # on one new row's features (a windowed adapter's layer runs when they are read: its cost counts here)
            if n == 1:
                heads.append(elapsed_ms(lambda: propose(model, out["s"].hk[:, -1]), dev))
            caches.crop(prefix)
        shallow.append(statistics.median(ts[1:]))
        deep.append(statistics.median(td[1:]))
    return CostCurve(_monotone(shallow), _monotone(deep), statistics.median(heads), feature_ms=_feature_ms(model, reps))


@torch.no_grad()
def _feature_ms(model, reps: int, context: int = 32) -> float:
    """The feature drafter's token, median over ``reps``: one entry through its layer after a ``context`` of them,
    and its head's proposal (0 without a feature drafter)."""
    fd = getattr(model, "feature_drafter", None)
    if fd is None:
        return 0.0
    cache, d = fd.new_cache(context + 2), model.config.hidden_size
    f, ids = torch.zeros(context + 1, d, device=model.device), torch.arange(context + 1, device=model.device)
    fd.step(f[:context], ids[:context], cache)
    times = []
    for _ in range(reps + 1):
        times.append(elapsed_ms(lambda: propose(fd, fd.step(f[context:], ids[context:], cache)), model.device))
        cache.crop(context)
    return statistics.median(times[1:])


def _at(ms: list[float], rows: int) -> float:
    """A pass over ``rows`` rows of the measured curve ``ms``; past its range extended along its last step."""
    k = len(ms)
    if rows <= k:
        return ms[rows - 1]
    slope = ms[-1] - ms[-2] if k > 1 else ms[-1]
    return ms[-1] + (rows - k) * max(0.0, slope)


def _monotone(ms: list[float]) -> list[float]:
    """Running maximum: more tokens never cost less (a noisy shared machine can measure them so)."""
    out: list[float] = []
    for x in ms:
        out.append(max(x, out[-1]) if out else x)
    return out
