"""Draft, Verify & Improve: what happens after every verify/commit block (work plan step 7).

    block -> tuples -> ring buffer -> (every N blocks) trainer step -> metrics -> (every M blocks) checkpoint
    BlockObserver      TrainingTick                     Bookkeeping

``DVILearner`` composes the three parts (each testable alone: ``dvi/block_samples.py``, ``dvi/training_tick.py``,
``Bookkeeping`` below) and owns the checkpoints. ``global_step`` counts blocks. The verifier is frozen, so none of
this can change a committed token. With a trained adapter (``model.trained_adapter``) the buffer keeps each tuple's
segment (the adapter's window) and the final checkpoint is also written as an adapter folder, DIR/adapter. With a
feature drafter (``model.feature_drafter``) the buffer keeps its segments too and a second trainer trains it on the
same tuples (``dvi/part_trainers.py``); the checkpoint holds it with its optimizer. ``heldout`` (set by
``dvi.heldout_eval.attach``) evaluates the trainable drafters on the fixed held-out set; its rows go to the metrics
at each block and at ``finish``, which evaluates once more and puts the result in the summary.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dvi.block_samples import BlockObserver, prefill_samples
from dvi.buffer import DVIRingBuffer
from dvi.checkpoint import CheckpointError, checkpoint_path, load_ckpt, read_ckpt, save_ckpt
from dvi.config import DVIConfig
from dvi.metrics import MetricsLogger
from dvi.training_tick import TickResult, TrainingTick
from kangaroo.adapter import save_adapter
from kangaroo.speculative import Block, PrefillTargets
from kangaroo.timing import now


def metrics_dir(metrics_out: str) -> Path:
    """``--metrics-out`` is a folder; a ``.csv`` path names the folder of the same name without the suffix."""
    p = Path(metrics_out or "runs/metrics")
    return p.with_suffix("") if p.suffix == ".csv" else p


@torch.no_grad()
def calibrate_ar_ms(model, n: int = 12) -> float:
    """Median wall time of one plain autoregressive step (all layers + the verifier head, one token), in ms:
    the reference behind the ``speedup`` column."""
    caches = model.new_caches(n + 8)
    x = torch.tensor([[1, 2, 3, 4]], device=model.device)
    model.forward_deep(model.forward_shallow(x, caches.shallow).h, caches.deep)
    times = []
    for _ in range(n):
        t0 = now(model.device)
        h = model.forward_shallow(x[:, :1], caches.shallow).h
        model.verifier_logits(model.forward_deep(h, caches.deep)).argmax(-1).tolist()
        times.append((now(model.device) - t0) * 1e3)
    return sorted(times)[len(times) // 2]


class Bookkeeping:
    """Metrics (CSVs, the summary line, the plot) and the totals of one run, and the checkpoint cadence."""

    def __init__(self, cfg: DVIConfig, metrics: MetricsLogger, print_fn=print):
        self.cfg, self.metrics, self.print = cfg, metrics, print_fn
        self.train_steps = self.over_budget = 0
        self.train_ms_total = self.blocks_ms_total = 0.0
        self.prefills = self.prefill_tuples = 0
        self.prefill_ms_total = 0.0   # the verifier head over the scored prompt rows + pushing their tuples

    def log_prefill(self, t: PrefillTargets, push_ms: float) -> None:
        self.prefills += 1
        self.prefill_tuples += len(t.positions)
        self.prefill_ms_total += t.ms + push_ms
        self.metrics.log_prefill(self.prefills, t.prompt_len, len(t.positions), t.ms, push_ms)

    def save_due(self, global_step: int) -> bool:
        every = self.cfg.io.save_every
        return self.cfg.online and bool(every) and global_step % every == 0

    def log_train(self, step: int, stats: dict, inline: bool, skipped: int = 0) -> None:
        self.train_steps += 1
        self.train_ms_total += stats["ms"]
        self.metrics.log_train(step, stats)
        if stats["over_budget"] and inline:
            self.over_budget += 1
            if self.over_budget % 100 == 1:
                self.print(f"[dvi] trainer step took {stats['ms']:.1f} ms > --max-online-train-ms "
                           f"{self.cfg.trainer.max_ms}: the inline trainer now steps only as often as the budget "
                           f"allows ({skipped} due steps skipped so far); --dvi-trainer thread takes it off the "
                           "decode loop")

    def log_block(self, step: int, blk: Block, own_ms: float, tick: TickResult, version) -> None:
        d, v = blk.draft, blk.verification
        wall = d.ms + v.ms + own_ms
        self.blocks_ms_total += wall
        self.metrics.log_block(step, blk.drafted, blk.accepted, len(blk.committed), wall, d.ms, v.ms, tick.train_ms,
                               decode_ms=wall - tick.train_ms, bg_trainer_ms=tick.bg_ms, lora_version=version,
                               top1_agree=blk.top1_agree, source=blk.source, asked_ms=blk.asked_ms)

    def summary(self) -> dict:
        return {"train_steps": self.train_steps, "over_budget_steps": self.over_budget,
                "train_ms_per_step": self.train_ms_total / max(1, self.train_steps),
                "train_share_of_wall": self.train_ms_total / max(1e-9, self.blocks_ms_total),
                "prefill_tuples": self.prefill_tuples, "prefill_ms_total": self.prefill_ms_total,
                "prefill_ms_per_prompt": self.prefill_ms_total / max(1, self.prefills)}


class DVILearner:
    """Owns the buffer, the training side, the bookkeeping and the checkpoints of one run; ``on_block`` is the
    hook that ``kangaroo_generate`` calls after every block. ``model`` needs an attached drafter head."""

    def __init__(self, model, cfg: DVIConfig, print_fn=print):
        self.model, self.cfg, self.print = model, cfg, print_fn
        self.extra_state = None   # () -> dict of plain values saved in every checkpoint's ``extra`` (e.g. calibration)
        self.loaded_extra: dict = {}  # the ``extra`` of the checkpoint loaded at start ({} without one)
        self.online = cfg.online
        adapter, fd = model.trained_adapter, getattr(model, "feature_drafter", None)
        self.buffer = DVIRingBuffer(cfg.buffer, model.config.hidden_size, model.config.vocab_size,
                                    device=str(model.device), segment_window=0 if adapter is None else adapter.window,
                                    defer_topk=cfg.threaded,  # the trainer's thread takes the top-K of the logits
                                    feature_window=0 if fd is None else fd.window)
        self.observer = BlockObserver(self.buffer, cfg.io.debug_hk, print_fn, dense=cfg.dense.enabled)
        self.training = TrainingTick(model, cfg, self.buffer)
        self.heldout = None  # a dvi.heldout_eval.HeldoutEval, from attach(); None: no held-out evaluation
        self.global_step = 0
        self.run_blocks = 0  # blocks seen by this process (global_step also counts the resumed ones)
        if cfg.io.load:
            self.load(cfg.io.load)
        self.training.start()
        metrics = MetricsLogger(metrics_dir(cfg.io.metrics_out), max_k=cfg.io.max_k,
                                ar_ms_per_token=calibrate_ar_ms(model), every=cfg.io.metrics_every, print_fn=print_fn)
        self.books = Bookkeeping(cfg, metrics, print_fn)

    # the parts, under the names callers and tests use
    trainer = property(lambda self: self.training.trainer)
    shadow = property(lambda self: self.training.shadow)
    bg = property(lambda self: self.training.bg)
    budget = property(lambda self: self.training.budget)
    metrics = property(lambda self: self.books.metrics)
    train_steps = property(lambda self: self.books.train_steps)

    @property
    def prefill_positions(self) -> int:
        """Prompt positions ``kangaroo_generate`` should score for ``on_prefill`` (0: dense off, or not online)."""
        d = self.cfg.dense
        return d.prefill_positions if self.online and d.enabled else 0

    # ------------------------------------------------------------------------------------------ the hooks
    def on_prefill(self, t: PrefillTargets) -> None:
        """Dense supervision from the prompt: KD-only tuples at the positions ``prefill`` scored."""
        if not self.prefill_positions:
            return
        t0 = now(self.model.device)
        self.observer.push(prefill_samples(t))
        self.books.log_prefill(t, (now(self.model.device) - t0) * 1e3)

    def on_block(self, blk: Block) -> None:
        t0 = now(self.model.device)
        if self.online:  # deployed (not online): nothing to store
            self.observer.observe(blk, self.global_step + 1)
        self.global_step += 1
        self.run_blocks += 1
        tick = self.training.tick(self.global_step)
        for step, stats in tick.steps:
            self.books.log_train(step, stats, inline=self.bg is None, skipped=self.budget.skipped)
        if self.books.save_due(self.global_step):
            self.save(checkpoint_path(self.cfg.io.save_dir, self.global_step))
        self.log_heldout()
        self.books.log_block(self.global_step, blk, (now(self.model.device) - t0) * 1e3, tick, self.training.version)

    def log_heldout(self) -> None:
        """The held-out rows evaluated since the last call (on whichever thread) into the metrics."""
        for row in self.heldout.take() if self.heldout is not None else ():
            self.metrics.log_heldout(row)

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self, path, finished: bool = False) -> Path:
        if self.bg is not None:  # a consistent optimizer/LoRA pair: wait for the step in flight (checkpoints only)
            with self.bg.step_lock:
                self.bg.apply_published_blocking()
                return self._save(path, finished)
        return self._save(path, finished)

    def _save(self, path, finished: bool) -> Path:
        t = self.trainer
        held = {} if self.heldout is None else {"heldout_trainer_steps": self.heldout.trainer_steps}  # resumed: go on
        save_ckpt(path, self.model, t.optimizer, t.schedule, t.ema_baseline, global_step=self.global_step,
                  extra={**(self.extra_state() if self.extra_state else {}), "train_steps": self.train_steps,
                         "ablation": self.cfg.trainer.ablation, "finished": finished,
                         "warm_started": bool(self.cfg.io.warm_start or self.loaded_extra.get("warm_started")), **held},
                  feature_trainer=self.training.trainers.get("feature"))
        return Path(path)

    def load(self, path) -> None:
        """Resume (online: optimizer, schedule, baseline and step count too) or deploy (LoRA tensors only)."""
        t, ablation = self.trainer, self.cfg.trainer.ablation
        self.loaded_extra = dict(read_ckpt(path).get("extra") or {})
        if self.online:
            saved = self.loaded_extra.get("ablation")
            if saved is not None and saved != ablation:
                raise CheckpointError(f"checkpoint {path} was trained with --dvi-ablation {saved}, this run has "
                                      f"{ablation}: pass --dvi-ablation {saved} to resume it, or "
                                      "train a new drafter (another --save-lora-path)")
            t.ema_baseline = load_ckpt(path, self.model, t.optimizer, t.schedule,
                                       feature_trainer=self.training.trainers.get("feature"))
            self.global_step = int(read_ckpt(path).get("global_step") or 0)
        else:
            load_ckpt(path, self.model, None, None)
        self.print(f"[dvi] loaded {path} ({'resume at block ' + str(self.global_step) if self.online else 'deploy'})")

    def finish(self, finished: bool = True) -> dict:
        """Save DIR/final.pt (online runs), close the metrics (CSVs + plot) and return a summary. An interrupted
        run saves too (so it can be resumed), with ``extra["finished"] = False`` in the checkpoint."""
        threaded = self.bg is not None
        for step, stats in self.training.close():
            self.books.log_train(step, stats, inline=False)
        if self.heldout is not None:  # the final weights (the trainer thread stopped, its last weights adopted)
            self.heldout.evaluate(self.global_step)
            self.log_heldout()
        out = {"blocks": self.global_step, **self.books.summary(), "budget_skipped_steps": self.budget.skipped,
               "judged_tuples": self.observer.judged, "kd_only_tuples": self.observer.kd_only,
               "trainer": "thread" if threaded else "inline"}
        if self.online and self.run_blocks:  # no block seen (no prompt left): no checkpoint from no data
            out["final"] = str(self.save(checkpoint_path(self.cfg.io.save_dir), finished))
            if self.model.trained_adapter is not None:  # deployable alone: --adapter-path DIR
                out["adapter"] = str(Path(self.cfg.io.save_dir) / "adapter")
                save_adapter(self.model.trained_adapter, out["adapter"])
        if self.heldout is not None:
            out["heldout"] = self.heldout.summary()
        fl = self.metrics.first_last(50)
        out["first_50"], out["last_50"] = fl["first"], fl["last"]
        self.metrics.close()
        out["metrics"] = str(self.metrics.out_dir)
        return out
