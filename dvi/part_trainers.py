"""One ``OnlineTrainer`` per trainable part of a drafter (``dvi/trainable_parts.py``), stepped on the same batch:
what the training tick and the trainer thread step, as they stepped the one trainer before.

Each part has its own optimizer, schedule and PG baseline (a checkpoint keeps each); the feature drafter's may take
its own learning rate (``TrainerConfig.feature_lr``: a fresh decoder layer, not a LoRA delta). ``step`` returns the
self-drafter's stats as before, each other part's under its name as a prefix (``feature_loss``, ...), and ``ms``
the time of all of them.
"""
from __future__ import annotations

from dataclasses import replace

from dvi.config import ScheduleConfig, TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.schedule import PiecewiseSchedule
from dvi.trainable_parts import parts_of


def part_config(cfg: TrainerConfig, name: str) -> TrainerConfig:
    """A part's trainer settings: the run's, with the feature drafter's own learning rate where set."""
    if name == "feature" and cfg.feature_lr is not None:
        return replace(cfg, lr=cfg.feature_lr)
    return cfg


class PartTrainers:
    def __init__(self, drafter, cfg: TrainerConfig, schedule: ScheduleConfig, vocab_size: int):
        self.cfg = cfg
        self.by_name = {p.name: OnlineTrainer(p, part_config(cfg, p.name), PiecewiseSchedule.from_config(schedule),
                                              vocab_size) for p in parts_of(drafter, cfg.feature_bf16)}
        if not self.by_name:
            raise ValueError("the drafter has nothing to train: attach the drafter head (or a feature drafter) first")

    def get(self, name: str):
        return self.by_name.get(name)

    def step(self, batch, global_step: int) -> dict:
        out, ms = {}, 0.0
        for name, trainer in self.by_name.items():
            stats = trainer.step(batch, global_step)
            ms += stats["ms"]
            out.update(stats if name == "self" else {f"{name}_{k}": v for k, v in stats.items()})
        out["ms"] = ms
        out["over_budget"] = self.cfg.max_ms is not None and ms > self.cfg.max_ms
        return out
