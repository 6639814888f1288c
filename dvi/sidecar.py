"""The DVI trainer as a sidecar process: verification traces in, versioned drafter checkpoints out.

    trace shards (dvi/traces.py) -> blocks -> tuples (dvi/block_samples.py) -> ring buffer -> OnlineTrainer steps
      -> DIR/drafter_v{N:06d}.pt (dvi/drafter_versions.py), each written atomically

Where the verifier runs on a serving engine, the engine writes the traces and the drafter side adopts new versions
at block boundaries (``dvi/hot_swap.py`` here; the engine's weight-update endpoint there, docs/scale.md). The same
buffer, observer and trainer as the online loop (``dvi/online_loop.py``) run here, on the sidecar's own copy of the
drafter (``model``: a ``KangarooModel`` with its LoRA head attached, and its trained adapter if it has one).

``poll()`` consumes the shards written since the last poll, takes a trainer step every ``update_every`` blocks once
the buffer holds a batch, and publishes version N + 1 when it took any. Each version is a full DVI checkpoint (the
optimizer, schedule and the last shard consumed in ``extra``), so a restarted sidecar resumes from the newest one.
"""
from __future__ import annotations

import threading

from dvi.block_samples import BlockObserver
from dvi.buffer import DVIRingBuffer
from dvi.checkpoint import load_ckpt, read_ckpt, save_ckpt
from dvi.config import DVIConfig
from dvi.drafter_versions import latest_version, version_path
from dvi.online_trainer import OnlineTrainer
from dvi.schedule import PiecewiseSchedule
from dvi.traces import block_of, read_shard, shard_numbers


class Sidecar:
    def __init__(self, model, cfg: DVIConfig, traces, out, print_fn=print):
        adapter = model.trained_adapter
        self.model, self.cfg, self.traces, self.out, self.print = model, cfg, traces, out, print_fn
        self.vocab_size = model.config.vocab_size
        self.buffer = DVIRingBuffer(cfg.buffer, model.config.hidden_size, self.vocab_size,
                                    segment_window=0 if adapter is None else adapter.window)
        self.observer = BlockObserver(self.buffer, dense=cfg.dense.enabled)
        self.trainer = OnlineTrainer(model, cfg.trainer, PiecewiseSchedule.from_config(cfg.schedule), self.vocab_size)
        self.version = self.shard = self.blocks = self.pending_steps = 0
        newest = latest_version(out)
        if newest is not None:
            self._resume(*newest)

    def _resume(self, version: int, path) -> None:
        t = self.trainer
        t.ema_baseline = load_ckpt(path, self.model, t.optimizer, t.schedule)
        ck = read_ckpt(path)
        self.version, self.blocks = version, int(ck.get("global_step") or 0)
        self.shard = int((ck.get("extra") or {}).get("shard", 0))
        self.print(f"[sidecar] resumed from {path} (version {version}, after shard {self.shard})")

    def poll(self) -> int | None:
        """Consume the new shards and train; the version published now, or None."""
        for n in shard_numbers(self.traces):
            if n <= self.shard:
                continue
            for rec in read_shard(self.traces, n):
                self.blocks += 1
                self.observer.observe(block_of(rec, self.vocab_size), self.blocks)
                self._maybe_step()
            self.shard = n
        return self.publish() if self.pending_steps else None

    def _maybe_step(self) -> None:
        t = self.cfg.trainer
        if self.blocks % t.update_every == 0 and self.buffer.size >= t.batch_size:
            self.trainer.step(self.buffer.sample(t.batch_size), self.blocks)
            self.pending_steps += 1

    def publish(self) -> int:
        t = self.trainer
        self.version += 1
        path = version_path(self.out, self.version)
        save_ckpt(path, self.model, t.optimizer, t.schedule, t.ema_baseline, global_step=self.blocks,
                  extra={"version": self.version, "shard": self.shard, "steps": self.pending_steps})
        self.pending_steps = 0
        self.print(f"[sidecar] version {self.version}: {path} ({self.blocks} blocks)")
        return self.version

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Poll until ``stop`` is set (a thread or a process of its own)."""
        while not stop.is_set():
            self.poll()
            stop.wait(interval_s)
