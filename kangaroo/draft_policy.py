"""When to stop drafting: the policy a drafter asks before it keeps each candidate token.

``decide(confs, source) -> (keep, go_on)``: ``confs`` are the confidences of the tokens kept so far plus, last,
the candidate's; ``keep`` says whether the candidate joins the block, ``go_on`` whether to draft another.
``observe(block)`` feeds back what the verifier accepted.

  threshold  Kangaroo's rule: keep every candidate, stop after one whose confidence is under ``threshold``
             (so a block always drafts at least one token).
  goodput    keep the candidate only if it raises the expected committed tokens per millisecond of the block
             (SmartSpec, arXiv 2406.14066), so a block may draft zero tokens (a plain greedy step):

                 E[committed](m) = 1 + sum_{i<=m} prod_{j<=i} p_j        p_j = calibrated acceptance of d_j
                 goodput(m)      = E[committed](m) / cost.block_ms(m, source)

             ``cost`` is the verify-cost curve the run measured on its own machine (``kangaroo/verify_cost.py``).
             A self-drafted candidate costs a head projection before its confidence is known, so after a run of
             wasted probes (a declined candidate, or a kept first draft the verifier rejected) the policy probes
             only every few blocks (``probe``: 1 + wasted // 2 blocks apart, at most ``max_skip``); the blocks in
             between are plain greedy steps that pay no head.
             p_j comes from the drafter's confidence through a ``Calibrator``: per source and confidence bin,
             (accepted + k * conf) / (tried + k), i.e. the raw confidence as a prior worth k observations,
             replaced by the verifier's observed acceptance as blocks come in.
             Sampled (``sample_with``: the sequence's ``SamplingParams``), acceptance falls as the temperature
             rises, so the calibrator keys its counts by a temperature bucket too (``calibrated_source``: the
             source alone when greedy, as ever); the self-drafter's confidence is then its probability of the
             token it picked under its tempered, truncated distribution.

Token trees (``kangaroo/tree_growth.py``): ``branch(...)`` says whether a candidate off the main line joins the
block's tree. goodput: a node's expected gain is its probability of being on the accepted path (the calibrated
acceptance of each node on its path, multiplied: siblings exclude each other, so E[committed] = 1 + the sum over
nodes), one token each; it joins if that raises committed tokens per ms of the block with its extra verify row
(``cost.block_ms(m, source, extra_rows)``). Branches are calibrated apart from the main line (``branch_source``).
threshold: a static tree, the drafter's next choices at the first position only. ``auto_tree_width`` decides at
start-up from the measured cost curve how many branches a position may ever get.
"""
from __future__ import annotations

from typing import Optional, Protocol

from kangaroo.sampling import GREEDY_BELOW

Extra = tuple[float, int]   # a tree's branches: (their expected accepted tokens, their verify rows)
NO_EXTRA: Extra = (0.0, 0)
TEMPERATURE_EDGES = (0.25, 0.5, 0.75, 1.0, 1.5)   # the calibration buckets of a sampled sequence's temperature


def calibrated_source(source: str, temperature: float = 0.0) -> str:
    """The source a calibration count is kept under: the draft source when greedy (as ever), else the source and its
    temperature bucket (``self@T<=0.75``, ``ngram@T>1.5``), each bucket calibrated apart."""
    if temperature < GREEDY_BELOW:
        return source
    edge = next((e for e in TEMPERATURE_EDGES if temperature <= e), None)
    return f"{source}@T<={edge}" if edge is not None else f"{source}@T>{TEMPERATURE_EDGES[-1]}"


def branch_source(source: str) -> str:
    """The calibration key of a drafter's candidates off the main line (its second, third... choices)."""
    return f"{source}:branch"


class DraftPolicy(Protocol):
    name: str

    def decide(self, confs: list[float], source: str = "self", extra: Extra = NO_EXTRA) -> tuple[bool, bool]: ...

    def branch(self, confs: list[float], extra: Extra, path: list[tuple[float, bool]], conf: float,
               source: str, main: bool = False) -> Optional[float]: ...

    def probe(self, source: str = "self") -> bool: ...

    def note(self, block) -> None: ...

    def observe(self, block) -> None: ...

    def observe_candidate(self, conf: float, accepted: bool, source: str) -> None: ...


class ThresholdStop:
    """Kangaroo's fixed rule (``--draft-policy threshold``)."""

    name = "threshold"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def decide(self, confs: list[float], source: str = "self", extra: Extra = NO_EXTRA) -> tuple[bool, bool]:
        return True, confs[-1] >= self.threshold

    def branch(self, confs, extra, path, conf, source, main=False) -> Optional[float]:
        """A static tree: the drafter's next choices at the first position (children of x), nothing deeper."""
        return conf if not path and not main else None

    def probe(self, source: str = "self") -> bool:
        return True

    def note(self, block) -> None:
        pass

    def observe(self, block) -> None:
        pass

    def observe_candidate(self, conf: float, accepted: bool, source: str) -> None:
        pass


class Calibrator:
    """Observed acceptance rate per (source, confidence bin), with the raw confidence as a prior of weight k; a
    sampled block's counts go under its source's temperature bucket (``calibrated_source``).
    ``decay`` < 1 forgets old observations (each update scales its bin's counts by it first): a drafter that
    learns online changes its acceptance, and the counts of its first blocks would hold it back."""

    def __init__(self, bins: int = 10, prior_weight: float = 4.0, decay: float = 1.0):
        self.bins, self.k, self.decay = bins, prior_weight, decay
        self.tried: dict[tuple[str, int], float] = {}
        self.accepted: dict[tuple[str, int], float] = {}

    def _key(self, source: str, conf: float, temperature: float = 0.0) -> tuple[str, int]:
        return calibrated_source(source, temperature), min(self.bins - 1, max(0, int(conf * self.bins)))

    def p(self, conf: float, source: str = "self", temperature: float = 0.0) -> float:
        key = self._key(source, conf, temperature)
        n, a = self.tried.get(key, 0), self.accepted.get(key, 0)
        return (a + self.k * conf) / (n + self.k)

    def update(self, conf: float, accepted: bool, source: str = "self", temperature: float = 0.0) -> None:
        key = self._key(source, conf, temperature)
        self.tried[key] = self.decay * self.tried.get(key, 0) + 1
        self.accepted[key] = self.decay * self.accepted.get(key, 0) + int(accepted)

    def state_dict(self) -> dict:
        """Plain values (a checkpoint's ``extra``): the bins, the prior and [source, bin, tried, accepted] rows."""
        return {"bins": self.bins, "prior_weight": self.k,
                "counts": [[src, b, n, self.accepted.get((src, b), 0)] for (src, b), n in sorted(self.tried.items())]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore ``state_dict()``'s counts (kept only with the same bins; the prior is this run's)."""
        if int(sd.get("bins", -1)) != self.bins:
            return
        self.tried = {(str(s), int(b)): float(n) for s, b, n, _ in sd.get("counts", [])}
        self.accepted = {(str(s), int(b)): float(a) for s, b, _, a in sd.get("counts", [])}

    def observe(self, block, temperature: float = 0.0) -> None:
        """Positions up to the first rejection are evidence; later drafts were never judged. A tree: every node
        whose parent is on the accepted path, branches under ``branch_source``."""
        d, tree = block.draft, getattr(block, "tree", None)
        if tree is not None:
            for node, ok in tree.judged():
                key = d.source if tree.draft.tree.is_main(node) else branch_source(d.source)
                self.update(tree.draft.confidences[node - 1], ok, key, temperature)
        for i, conf in enumerate(d.confidences[:block.accepted + 1] if tree is None else []):
            self.update(conf, i < block.accepted, d.source, temperature)
        judged = block.judged_declined  # a declined candidate the verifier judged anyway: keeps learning
        if judged is not None:
            self.update(d.declined_conf, judged, d.source, temperature)


def expected_committed(ps: list[float]) -> float:
    """1 + sum_i prod_{j<=i} p_j: the committed tokens expected from a block drafting len(ps) tokens."""
    total, run = 1.0, 1.0
    for p in ps:
        run *= p
        total += run
    return total


class GoodputPolicy:
    """``--draft-policy goodput``: draft the next token only if expected committed tokens per ms rises."""

    name = "goodput"

    def __init__(self, cost, calibrator: Calibrator | None = None, max_skip: int = 16, gate=None):
        self.cost = cost
        self.calibrator = calibrator or Calibrator()
        self.max_skip = max_skip
        self.gate = gate       # a ProbeGate (kangaroo/probe_gate.py) decides the probes; None: the backoff below
        self.declines = 0      # wasted self probes in a row: declined, or kept and rejected by the verifier
        self.since_probe = 0   # blocks since the last probe
        self.temperature = 0.0  # the sequence's (``sample_with``): calibrated per temperature bucket

    def sample_with(self, params) -> None:
        self.temperature = 0.0 if params.greedy else params.temperature
        if self.gate is not None:
            self.gate.sample_with(params)

    def goodput(self, ps: list[float], source: str, extra: Extra = NO_EXTRA) -> float:
        """Committed tokens per ms of the verify pass this block joins: in a batch the other sequences' rows (about
        a token each) share it, so a drafted row is weighed against the whole pass, not a lone step. ``extra``: a
        tree's branches, (their expected accepted tokens, their rows)."""
        return ((self.cost.batch_rows + expected_committed(ps) + extra[0])
                / self.cost.block_ms(len(ps), source, extra[1]))

    def decide(self, confs: list[float], source: str = "self", extra: Extra = NO_EXTRA) -> tuple[bool, bool]:
        ps = [self.calibrator.p(c, source, self.temperature) for c in confs]
        keep = self.goodput(ps, source, extra) > self.goodput(ps[:-1], source, extra)
        if source == "self" and len(confs) == 1 and not keep:
            self.declines += 1
        return keep, keep

    def branch(self, confs: list[float], extra: Extra, path: list[tuple[float, bool]], conf: float,
               source: str, main: bool = False) -> Optional[float]:
        """A node off the main line (``main``: its parent's first child, under a branch), below the nodes ``path``
        ((confidence, first child) from x's child down to its parent), beside the main line ``confs`` and the
        branches ``extra``: its probability of being accepted if it pays for its row, else None."""
        def p(c: float, first: bool) -> float:
            return self.calibrator.p(c, source if first else branch_source(source), self.temperature)

        ps = [self.calibrator.p(c, source, self.temperature) for c in confs]
        gain = p(conf, main)
        for c, first in path:
            gain *= p(c, first)
        pays = self.goodput(ps, source, (extra[0] + gain, extra[1] + 1)) > self.goodput(ps, source, extra)
        return gain if pays else None

    def probe(self, source: str = "self") -> bool:
        """Whether this block may pay for a first candidate (see the module docstring)."""
        if self.gate is not None:
            return self.gate.should_probe()
        self.since_probe += 1
        if self.since_probe >= min(self.max_skip, 1 + self.declines // 2):
            self.since_probe = 0
            return True
        return False

    def note(self, block) -> None:
        """Every block, whoever drafted it: what the gate may use before the next probe."""
        if self.gate is not None:
            self.gate.note(block)

    def observe(self, block) -> None:
        self.calibrator.observe(block, self.temperature)
        if block.draft.source == "self" and block.drafted:  # a kept first draft the verifier rejected is a
            self.declines = 0 if block.accepted else self.declines + 1  # wasted probe too
        if self.gate is not None and block.top1_agree is not None:
            self.gate.learn(block.top1_agree)

    def observe_candidate(self, conf: float, accepted: bool, source: str) -> None:
        """A declined candidate the verifier judged anyway (e.g. an n-gram proposal the hybrid did not use)."""
        self.calibrator.update(conf, accepted, source, self.temperature)


# The prior worth of a branch, in tokens a block: how often the self-drafter's 2nd (3rd) choice at the first
# position, not its 1st, is the verifier's token (runs/exp_trees: 0.051 and 0.027 for the identity drafter over 2,386
# ShareGPT answer positions; runs/exp_draft_ceiling: 0.05-0.08 for the 2nd of trained heads on Spec-Bench).
# ``auto_tree_width`` weighs it against the measured row cost.
BRANCH_GAINS = (0.05, 0.027)


def auto_tree_width(cost, gains: tuple[float, ...] = BRANCH_GAINS) -> int:
    """The tree width a run starts with (``--tree-width auto``): 1 (a chain), plus one for each next choice at a
    position whose expected gain (``gains``, tokens a block) beats what its row costs, in the tokens a plain greedy
    step commits in that time (the verified row, and the shallow row a self branch rides along in, over one step).
    Q4_1 on this CPU (a row ~0.24 of a step) stays a chain; float32 (~0.02) branches."""
    step = cost.shallow_ms[0] + cost.deep_ms[0]
    row = (cost.row_ms + cost.shallow_row_ms) / max(1e-9, step)
    width = 1
    for g in gains:
        if g <= row:
            break
        width += 1
    return width


def make_policy(name: str, threshold: float = 0.6, cost=None, prior_weight: float = 4.0, gate: bool = False,
                decay: float = 1.0, learning: bool = False):
    """``gate``: the goodput policy decides its self probes by a ``ProbeGate`` (``learning``: the drafter learns
    online); ``decay``: its calibrator's."""
    if name == "threshold":
        return ThresholdStop(threshold)
    if name == "goodput":
        if cost is None:
            raise ValueError("the goodput policy needs a verify-cost curve (kangaroo.verify_cost)")
        from kangaroo.probe_gate import ProbeGate

        return GoodputPolicy(cost, Calibrator(prior_weight=prior_weight, decay=decay),
                             gate=ProbeGate(cost, learning) if gate else None)
    raise ValueError(f"unknown draft policy {name!r}: use threshold or goodput")
