"""One drafter per request, all made in this one place (a drafter holds per-sequence state: the n-gram index, the
memory drafter's match, the goodput policy's probe back-off), by ``kangaroo.drafter_config.build_drafter`` (``auto``
resolved the same way as in the drivers).

What learning across requests means for drafting is shared: the verify-cost curve (measured once at startup), the
memory drafter's store (one per server, ``new_memory``: every finished request's output goes in, and later requests
draft from it), and the goodput policy's ``Calibrator`` (one object for every drafter of every request; its counts
are keyed by draft source, so the n-gram, memory and self parts stay apart). The calibration goes into every
checkpoint and comes back on a restart.
"""
from __future__ import annotations

from kangaroo.draft_policy import Calibrator
from kangaroo.drafter_config import DrafterConfig, build_drafter, cost_curve, new_memory, resolve_auto
from kangaroo.drafters import Drafter, chain_names
from kangaroo.drafters.counters import NONE
from kangaroo.packed_head import configure


class DrafterFactory:
    def __init__(self, cfg: DrafterConfig, model, online: bool, print_fn=print):
        feature = getattr(model, "feature_drafter", None) is not None
        self.cfg, self.model, self.online = resolve_auto(cfg, online, feature), model, online
        goodput = self.cfg.draft_policy == "goodput"
        configure(model, self.cfg.head_precision, frozen=not online)  # before the cost curve times the head
        self.cost = cost_curve(self.cfg, model, print_fn) if goodput else None
        self.calibrator = Calibrator(prior_weight=self.cfg.goodput_prior) if goodput else None
        self.memory = new_memory(self.cfg)

    def __call__(self) -> Drafter:
        return build_drafter(self.cfg, self.model, cost=self.cost, memory=self.memory, calibrator=self.calibrator,
                             online=self.online)

    @property
    def sources(self) -> tuple[str, ...]:
        """The draft sources of this factory's chain, in order, then ``none`` (a block that drafted nothing)."""
        return (*chain_names(self.cfg.drafter), NONE)

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
        memory = None if self.memory is None else self.memory.footprint()
        return {**self().metadata(), "shared_calibration": self.calibrator is not None, "memory": memory}
