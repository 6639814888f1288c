"""One drafter per request, all made in this one place (a drafter holds per-sequence state: the n-gram index, the
goodput policy's probe back-off), by the rules of ``kangaroo.drafter_config`` (``auto`` resolved the same way).

What learning across requests means for drafting is shared: the verify-cost curve (measured once at startup) and
the goodput policy's ``Calibrator`` (one object for every request; its counts are keyed by draft source, so the
n-gram and self parts stay apart). Its counts go into every checkpoint and come back on a restart.
"""
from __future__ import annotations

from kangaroo.draft_policy import Calibrator, GoodputPolicy, make_policy
from kangaroo.drafter_config import DrafterConfig, cost_curve, resolve_auto
from kangaroo.drafters import Drafter, make_drafter


class DrafterFactory:
    def __init__(self, cfg: DrafterConfig, model, online: bool, print_fn=print):
        self.cfg = resolve_auto(cfg, online)
        goodput = self.cfg.draft_policy == "goodput"
        self.cost = cost_curve(self.cfg, model, print_fn) if goodput else None
        self.calibrator = Calibrator(prior_weight=self.cfg.goodput_prior) if goodput else None

    def __call__(self) -> Drafter:
        c = self.cfg
        return make_drafter(c.drafter, c.steps, self._policy, c.ngram_min, c.ngram_max)

    def _policy(self):
        if self.calibrator is not None:
            return GoodputPolicy(self.cost, self.calibrator)
        return make_policy(self.cfg.draft_policy, self.cfg.threshold)

    def state_dict(self) -> dict:
        """For a checkpoint's ``extra`` ({} when no policy calibrates)."""
        return {} if self.calibrator is None else {"calibration": self.calibrator.state_dict()}

    def load_state_dict(self, extra: dict) -> bool:
        """Restore the calibration a checkpoint's ``extra`` holds; whether there was one to restore."""
        sd = extra.get("calibration")
        if self.calibrator is None or not isinstance(sd, dict):
            return False
        self.calibrator.load_state_dict(sd)
        return True

    def metadata(self) -> dict:
        return {**self().metadata(), "shared_calibration": self.calibrator is not None}
