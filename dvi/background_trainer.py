"""The DVI trainer off the critical path: its own thread, its own copy of the trained tensors (the LoRA A/B, a
trained adapter's weights, a feature drafter's layer and LoRA head).

    decode thread                                   trainer thread
    on_block: push tuples (buffer lock)             wait for a step the cadence owes (one per update_every blocks;
                                                    idle_steps: per block, so the thread steps whenever it is idle;
                                                    one it was too busy for is taken when it is free) and a batch
              apply_published() (never blocks)      sample (buffer lock) -> each part's OnlineTrainer.step on the
                                                             shadow (``dvi/part_trainers.py``)
                                                    publish: copy the shadow's tensors to a staging copy,
                                                             version += 1

With a ``share`` (``dvi/trainer_share.py``, ``--dvi-trainer-share`` < 1) a due step also waits until the share
allows it, its time (hooks included) is charged to it, and the steps it deferred stay owed (up to
``share.max_owed``), taken when the share allows: on idle time, and at ``close(drain=True)``.
After each step (and its publish) the thread calls the ``hooks`` (``fn(global step)``; the held-out evaluation,
``dvi/heldout_eval.py``), with no lock held: the shadow then holds exactly the weights just published.
The decode thread adopts new weights only at block boundaries (``apply_published``) and only if the
staging lock is free at that moment (otherwise at the next boundary), so it never waits for a trainer step.
The shadow head shares the frozen base weight with the live head (read-only) and owns its A/B; a trained adapter is
copied whole (all its tensors train), as is a feature drafter's layer (its head shares the frozen rows); the
optimizers hold the shadow's tensors. The tensors go between shadow, staging copy and live model as
``dvi.trainable_parts.published_tensors`` lists them. ``stats()`` hands over the
trainer steps finished since the last call.
"""
from __future__ import annotations

import copy
import threading
import time

import torch

from dvi.trainable_parts import published_tensors, shadow_feature_drafter
from kangaroo.drafter_head import TrainableDrafter


MAX_OWED = 16  # steps a busy trainer may owe its cadence (taken when it is free; more are dropped)


class ShadowDrafter:
    """What the trainers train (a ``TrainableDrafter`` with its parts): the live model's drafter head with private
    LoRA tensors, a private copy of its trained adapter and of its feature drafter (if any; the rotary embedding, the
    embedding and the vocabulary map are the model's, read-only)."""

    def __init__(self, model: TrainableDrafter):
        self.drafter_vocab = model.drafter_vocab
        self.drafter_head = None if model.drafter_head is None else model.drafter_head.shadow()
        live = model.trained_adapter
        self.trained_adapter = None if live is None else copy.deepcopy(live)
        self.rotary_emb = model.rotary_emb
        self.feature_drafter = shadow_feature_drafter(getattr(model, "feature_drafter", None))

    def drafter_logits_from_hk(self, hk):
        return self.drafter_head(hk)

    def copy_from(self, model) -> None:
        copy_tensors(published_tensors(self), published_tensors(model))


@torch.no_grad()
def copy_tensors(dst: list, src: list) -> None:
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)


class BackgroundTrainer:
    def __init__(self, model, trainer, buffer, shadow: ShadowDrafter, hooks: list | None = None, share=None):
        """Cadence from ``trainer.cfg``: one step per ``update_every`` blocks (``idle_steps``: per block) once the
        buffer holds ``batch_size`` tuples; a step the trainer could not take when it fell due (busy with the one
        before, or deferred by its share) stays owed, at most ``MAX_OWED`` (with a share: its ``max_owed``), and is
        taken when it is next free (e.g. while the decode thread prefills a prompt). ``hooks``: called after each step
        (a list the caller may extend later). ``share``: a ``TrainerShare`` bounding the thread's share of wall time
        under load (None: no bound)."""
        self.model, self.trainer, self.buffer, self.shadow, self.share = model, trainer, buffer, shadow, share
        self.hooks = hooks if hooks is not None else []
        cfg = trainer.cfg
        self.batch_size, self.update_every = cfg.batch_size, 1 if cfg.idle_steps else cfg.update_every
        self._cv = threading.Condition()
        self._blocks = 0            # the global step of the last block seen (decode side)
        self._owed = 0.0            # steps the cadence allowed and the trainer has not taken yet
        self._stop = False
        self._stopped = threading.Event()  # set with _stop: ends a wait for the share
        self._pub_lock = threading.Lock()
        self.step_lock = threading.Lock()  # held during a step: checkpoints take it to read a consistent optimizer
        self._staged = [p.detach().clone() for p in published_tensors(shadow)]
        self.version = 0            # published
        self.applied = 0            # adopted by the decode thread
        self._done: list[tuple[int, dict]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dvi-trainer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ decode side (never blocks long)
    def on_block(self, global_step: int) -> None:
        if self.share is not None:
            self.share.on_block()
        with self._cv:
            self._blocks = global_step
            if self.buffer.size >= self.batch_size:  # before the first batch: nothing owed
                cap = MAX_OWED if self.share is None else self.share.max_owed
                self._owed = min(cap, self._owed + 1 / self.update_every)
            self._cv.notify()

    def apply_published(self) -> bool:
        """Adopt the newest published weights if there are any and the staging copy is free right now."""
        if self.version == self.applied or not self._pub_lock.acquire(blocking=False):
            return False
        try:
            copy_tensors(published_tensors(self.model), self._staged)
            self.applied = self.version
        finally:
            self._pub_lock.release()
        return True

    def stats(self) -> list[tuple[int, dict]]:
        with self._cv:
            out, self._done = self._done, []
        if self.error is not None:
            raise RuntimeError("the DVI trainer thread failed") from self.error
        return out

    def close(self, drain: bool = False) -> None:
        """Stop the thread (after its current step); ``drain`` first waits until it caught up (its share, if any,
        released: the owed steps run freely)."""
        if self.share is not None:
            self.share.release()
        if drain:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self.error is not None or not self._due(), timeout=60)
        with self._cv:
            self._stop = True
            self._stopped.set()
            self._cv.notify()
        self._thread.join()
        self.apply_published_blocking()

    def apply_published_blocking(self) -> None:
        with self._pub_lock:
            copy_tensors(published_tensors(self.model), self._staged)
            self.applied = self.version

    # ------------------------------------------------------------------------------ trainer thread
    def _due(self) -> bool:
        return self._owed >= 1 - 1e-9 and self.buffer.size >= self.batch_size

    def owed(self) -> int:
        """Steps due now (more than one when the trainer was busy or its share deferred them)."""
        return int(self._owed + 1e-9)

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: self._stop or self._due())
                    if self._stop:
                        return
                pause = self.share.wait_s() if self.share is not None else 0.0
                if pause > 0:  # the share is spent: wait for it (or for close)
                    self._stopped.wait(pause)
                    continue
                with self._cv:
                    step = self._blocks
                    self._owed -= 1
                t0 = time.perf_counter()
                with self.step_lock:
                    stats = self.trainer.step(self.buffer.sample(self.batch_size), step)
                    with self._pub_lock:
                        copy_tensors(self._staged, published_tensors(self.shadow))
                        self.version += 1
                stats["thread_ms"] = (time.perf_counter() - t0) * 1e3
                for hook in self.hooks:
                    hook(step)
                if self.share is not None:
                    self.share.charge(time.perf_counter() - t0)
                with self._cv:
                    self._done.append((step, stats))
                    self._cv.notify_all()
        except BaseException as e:  # surfaced to the decode thread by stats()
            self.error = e
            with self._cv:
                self._cv.notify_all()
