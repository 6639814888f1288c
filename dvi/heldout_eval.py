"""When and where the held-out set is evaluated, and what becomes of the numbers (``dvi/heldout.py`` says what they
are).

    attach(learner, tokenizer, drafters=())   the one call an entry point makes, once its drafter is built: the held-out
                                              set read or captured, the self-drafter (and ``drafters``) evaluated now,
                                              after every ``--heldout-every`` trainer steps, and at ``finish``
    HeldoutEval                               the evaluations: ``evaluate``, ``after_step`` (the trainer hook),
                                              ``take`` (rows not yet logged), ``latest``, ``summary``
    evaluate_deployed(model, tokenizer, cfg, steps)   one evaluation of a deployed self-drafter (the benchmark's)
    heldout_set(model, tokenizer, cfg)        the capture itself (read or made), for a drafter's own tests

Where it runs: at the start and the end on the calling thread; after a trainer step on the thread that took it. With
``--dvi-trainer thread`` that is the trainer's thread, which evaluates the weights it has just published (its shadow
copy), so decoding never waits for an evaluation; inline, the decode loop pays for it (its ``ms`` is in each row).
The rows go to ``metrics/heldout.csv`` (``dvi/metrics.py``: the decode thread writes them at the next block), the
plot, the ``[dvi]`` line and the run summary; the server shows ``latest`` as gauges and in /health.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

import torch

from dvi.config import HeldoutConfig
from dvi.heldout import FeatureHeldout, HeldoutDrafter, SelfHeldout, score
from dvi.heldout_capture import HeldoutCapture, load_or_capture
from dvi.heldout_prompts import HeldoutSkipped


@dataclass(frozen=True)
class HeldoutRow:
    step: int           # blocks the learner had seen (the global step)
    trainer_steps: int  # trainer steps the evaluated weights have had (a resumed run's earlier ones included)
    drafter: str        # HeldoutDrafter.name
    top1: float
    accept_len: float
    n: int              # held-out positions
    ms: float           # the evaluation's time, on the thread it ran on


class HeldoutEval:
    def __init__(self, capture: HeldoutCapture, steps: int, every: int, trainer_steps: int = 0,
                 threaded: bool = False):
        """``steps``: the accepted-length cap (the drafter's ``--steps``); ``every``: evaluate after every N trainer
        steps; ``trainer_steps``: those the loaded weights already had; ``threaded``: trainer steps run on the
        trainer's thread (so ``after_step`` must not touch the decode thread's state)."""
        self.capture, self.steps, self.every, self.threaded = capture, steps, every, threaded
        self.trainer_steps = trainer_steps
        self.drafters: list[HeldoutDrafter] = []
        self.history: list[HeldoutRow] = []
        self._pending: list[HeldoutRow] = []
        self._lock = threading.Lock()

    def add(self, drafter: HeldoutDrafter) -> None:
        if any(d.name == drafter.name for d in self.drafters):
            raise ValueError(f"a held-out drafter named {drafter.name!r} is already evaluated")
        self.drafters.append(drafter)

    def evaluate(self, step: int, prepare: bool = True) -> list[HeldoutRow]:
        """Every drafter on the held-out set now; ``prepare``: on the decode thread (or with decoding stopped), so
        a drafter may first read what the decode thread owns (``SelfHeldout.prepare``: its packed head)."""
        rows = []
        for d in self.drafters:
            t0 = time.perf_counter()
            if prepare and hasattr(d, "prepare"):
                d.prepare()
            with torch.no_grad():
                s = score(d.predict(self.capture), self.capture, self.steps)
            rows.append(HeldoutRow(step, self.trainer_steps, d.name, s.top1, s.accept_len, s.n,
                                   (time.perf_counter() - t0) * 1e3))
        with self._lock:
            self.history += rows
            self._pending += rows
        return rows

    def after_step(self, step: int) -> None:
        """The trainer hook (``TrainingTick.step_hooks``): count the step; every ``every`` steps, evaluate."""
        self.trainer_steps += 1
        if self.trainer_steps % self.every == 0:
            self.evaluate(step, prepare=not self.threaded)

    def take(self) -> list[HeldoutRow]:
        """The rows evaluated since the last call (for the metrics files)."""
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def latest(self) -> dict[str, dict]:
        """Each drafter's newest row, as plain values."""
        with self._lock:
            return {r.drafter: asdict(r) for r in self.history}

    def summary(self) -> dict[str, dict]:
        """Per drafter: the first and the last evaluation, how many, and their mean time."""
        with self._lock:
            rows = list(self.history)
        out = {}
        for d in dict.fromkeys(r.drafter for r in rows):
            mine = [r for r in rows if r.drafter == d]
            first, last = mine[0], mine[-1]
            out[d] = {"top1": last.top1, "accept_len": last.accept_len, "trainer_steps": last.trainer_steps,
                      "start_top1": first.top1, "start_accept_len": first.accept_len, "n": last.n,
                      "evaluations": len(mine), "eval_ms": sum(r.ms for r in mine) / len(mine)}
        return out


def attach(learner, tokenizer, drafters: tuple = (), steps: int | None = None, print_fn=print) -> HeldoutEval | None:
    """Evaluate ``learner``'s (a ``DVILearner``) trainable drafters on the held-out set of its ``cfg.heldout``: the
    self-drafter, the feature drafter when the model has one, and ``drafters`` (more ``HeldoutDrafter``s). ``steps``:
    the accepted-length cap, the drafter's ``--steps`` (default ``cfg.io.max_k``, which the command line sets from
    it). Call it once the drafter is built (its head precision set), before decoding starts. Sets ``learner.heldout``
    and returns it; None when ``--heldout-positions`` is 0, or (one line) when the set is skipped
    (``HeldoutSkipped``)."""
    capture = heldout_set(learner.model, tokenizer, learner.cfg.heldout, print_fn)
    if capture is None:
        return None
    extra = learner.loaded_extra  # the trainer steps the loaded weights had (older checkpoints: as they counted)
    before = int(extra.get("heldout_trainer_steps", extra.get("trainer_steps_total", extra.get("train_steps", 0))))
    ev = HeldoutEval(capture, steps or learner.cfg.io.max_k, learner.cfg.heldout.every, before,
                     threaded=learner.bg is not None)
    ev.add(SelfHeldout(learner.model, learner.shadow or learner.model))
    if getattr(learner.model, "feature_drafter", None) is not None:
        ev.add(FeatureHeldout(learner.model, learner.shadow or learner.model))
    for d in drafters:
        ev.add(d)
    learner.heldout = ev
    learner.training.step_hooks.append(ev.after_step)
    ev.evaluate(learner.global_step)
    return ev


def evaluate_deployed(model, tokenizer, cfg: HeldoutConfig, steps: int, print_fn=print) -> dict | None:
    """``model``'s self-drafter as deployed now (its head precision set) on the held-out set of ``cfg``, once:
    ``HeldoutRow`` as a dict (None: no held-out set, as ``attach``). The benchmark's figure for a trained drafter."""
    capture = heldout_set(model, tokenizer, cfg, print_fn)
    if capture is None:
        return None
    ev = HeldoutEval(capture, steps, cfg.every)
    ev.add(SelfHeldout(model))
    return asdict(ev.evaluate(0)[0])


def heldout_set(model, tokenizer, cfg: HeldoutConfig, print_fn=print) -> HeldoutCapture | None:
    """The held-out set of ``model`` under ``cfg`` (read or captured); None when ``cfg.positions`` is 0, or (one line)
    when the set is skipped (``HeldoutSkipped``: text prompts and no tokenizer, or the default prompts not fetched)."""
    from kangaroo.greedy import eos_ids_of

    if not cfg.positions:
        return None
    try:
        return load_or_capture(model, tokenizer, cfg, eos_ids_of(tokenizer, model.config), print_fn)
    except HeldoutSkipped as e:
        print_fn(f"[heldout] {e}: no held-out evaluation in this run")
        return None
