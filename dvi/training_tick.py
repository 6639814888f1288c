"""The training side of the online loop, one tick per block: inline (under the enforced time budget) or on the
background thread (adopt its newest published weights at the block boundary).

    tick(global_step) -> TickResult(train_ms, bg_ms, steps)   steps: (global step, trainer stats) finished now
    step_hooks                                               fn(global step) after every trainer step, on the thread
                                                             that took it (the held-out evaluation, dvi/heldout_eval.py)
    share                                                    the trainer thread's TrainerShare (--dvi-trainer-share <
                                                             1: its share of wall time under load; dvi/trainer_share.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dvi.background_trainer import BackgroundTrainer, ShadowDrafter
from dvi.config import DVIConfig
from dvi.part_trainers import PartTrainers
from dvi.train_budget import TrainBudget
from dvi.trainer_share import TrainerShare


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
        self.step_hooks: list = []  # shared with the trainer thread, which calls them after each of its steps
        t, bounded = cfg.trainer, cfg.threaded and cfg.trainer.share < 1  # owed: at most a buffer's worth of batches
        self.share = TrainerShare(t.share, cfg.buffer.capacity // t.batch_size) if bounded else None

    def start(self) -> None:
        """Threaded: copy the (possibly just loaded) live LoRA to the shadow and start the trainer thread."""
        if self.cfg.threaded and self.bg is None:
            self.shadow.copy_from(self.model)
            self.bg = BackgroundTrainer(self.model, self.trainers, self.buffer, self.shadow, hooks=self.step_hooks,
                                        share=self.share)

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
                for hook in self.step_hooks:
                    hook(global_step)
        return out

    def close(self) -> list:
        """Stop the thread (with a share, after the steps it owes); returns the steps it finished since the last
        tick."""
        if self.bg is None:
            return []
        self.bg.close(drain=self.share is not None)
        return self.bg.stats()

    @property
    def version(self):
        return self.bg.applied if self.bg else None
