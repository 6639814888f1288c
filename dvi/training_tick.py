"""The training side of the online loop, one tick per block: inline (under the enforced time budget) or on the
background thread (adopt its newest published weights at the block boundary).

    tick(global_step) -> TickResult(train_ms, bg_ms, steps)   steps: (global step, trainer stats) finished now
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dvi.background_trainer import BackgroundTrainer, ShadowDrafter
from dvi.config import DVIConfig
from dvi.part_trainers import PartTrainers
from dvi.train_budget import TrainBudget


@dataclass
class TickResult:
    train_ms: float = 0.0       # trainer time inside the decode loop (inline)
    bg_ms: float = 0.0          # trainer time of background steps finished since the last tick
    steps: list = field(default_factory=list)


class TrainingTick:
    """Owns the trainers, one per trainable part (and, threaded, the shadow and its thread). ``online=False``: ticks
    do nothing."""

    def __init__(self, model, cfg: DVIConfig, buffer):
        self.model, self.cfg, self.buffer = model, cfg, buffer
        self.shadow = ShadowDrafter(model) if cfg.threaded else None
        self.trainers = PartTrainers(self.shadow or model, cfg.trainer, cfg.schedule, model.config.vocab_size)
        self.trainer = self.trainers.get("self")  # the self-drafter's (None: only a feature drafter trains)
        self.budget = TrainBudget(cfg.trainer.max_ms)
        self.bg = None

    def start(self) -> None:
        """Threaded: copy the (possibly just loaded) live LoRA to the shadow and start the trainer thread."""
        if self.cfg.threaded and self.bg is None:
            self.shadow.copy_from(self.model)
            self.bg = BackgroundTrainer(self.model, self.trainers, self.buffer, self.shadow)

    def tick(self, global_step: int) -> TickResult:
        out = TickResult()
        if self.bg is not None:
            self.bg.on_block(global_step)
            self.bg.apply_published()  # at a block boundary, and only if the new weights are free right now
            out.steps = self.bg.stats()
            out.bg_ms = sum(stats["ms"] for _, stats in out.steps)
        elif self.cfg.online:
            self.budget.on_block()
            t = self.cfg.trainer
            if global_step % t.update_every == 0 and self.buffer.size >= t.batch_size and self.budget.allow():
                stats = self.trainers.step(self.buffer.sample(t.batch_size), global_step)
                out.train_ms = stats["ms"]
                self.budget.charge(out.train_ms)
                out.steps = [(global_step, stats)]
        return out

    def close(self) -> list:
        """Stop the thread; returns the steps it finished since the last tick."""
        if self.bg is None:
            return []
        self.bg.close()
        return self.bg.stats()

    @property
    def version(self):
        return self.bg.applied if self.bg else None
