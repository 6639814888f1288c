"""Loss-weight schedule of the DVI online trainer, driven by the global step (one per verify/commit block).

    step < warmup:                 kl = kl0,                   ce = 0,              pg = 0      (pure KD warm-up)
    warmup <= step < warmup+ramp:  t = (step - warmup) / ramp, kl = kl0 + t (klmin - kl0), ce = t ce_max, pg = t pgmax
    step >= warmup + ramp:         kl = klmin,                 ce = ce_max,         pg = pgmax
"""
from __future__ import annotations

import warnings

HPARAMS = ("warmup", "kl0", "klmin", "pgmax", "ramp", "ce_max")


class PiecewiseSchedule:
    def __init__(self, warmup: int, kl0: float, klmin: float, pgmax: float, ramp: int | None = None,
                 ce_max: float = 1.0):
        self.warmup, self.kl0, self.klmin, self.pgmax, self.ce_max = int(warmup), kl0, klmin, pgmax, ce_max
        self.ramp = max(1, int(warmup if ramp is None else ramp))
        self.step = 0

    @classmethod
    def from_config(cls, cfg) -> "PiecewiseSchedule":
        """From a ``dvi.config.ScheduleConfig``."""
        return cls(cfg.warmup, cfg.kl0, cfg.klmin, cfg.pgmax)

    def set_step(self, step: int) -> None:
        self.step = int(step)

    def weights(self) -> dict:
        if self.step < self.warmup:
            return {"kl": float(self.kl0), "ce": 0.0, "pg": 0.0}
        t = min(1.0, (self.step - self.warmup) / self.ramp)
        return {"kl": float(self.kl0 + t * (self.klmin - self.kl0)), "ce": float(t * self.ce_max),
                "pg": float(t * self.pgmax)}

    def state_dict(self) -> dict:
        return {"step": self.step, **{k: getattr(self, k) for k in HPARAMS}}

    def load_state_dict(self, s: dict) -> None:
        """Restore the step. If the saved hyper-parameters differ from this schedule's, keep this schedule's
        (the flags of the resumed run win) and keep the step, with a warning naming the differences."""
        diff = {k: (s[k], getattr(self, k)) for k in HPARAMS if k in s and s[k] != getattr(self, k)}
        if diff:
            warnings.warn("DVI schedule: checkpoint hyper-parameters differ, using the current ones "
                          + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items()), stacklevel=2)
        self.step = int(s["step"])
