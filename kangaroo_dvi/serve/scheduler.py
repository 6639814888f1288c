"""The decode thread: continuous batching at block granularity.

    HTTP handlers (asyncio) --submit--> admission queue (at most max_batch + queue_size requests in the server,
                                        decoding or waiting: past it QueueFull -> 503 + Retry-After)
    decode thread, each turn:
      admit    while a slot is free: take a waiting request, give it a drafter and caches, and hand its prompt to
               the prefill thread (the machine's other core) while the requests in flight go on decoding
      join     a request whose prefill ended joins the batch; a learning server's learner first gets the dense
               targets that prefill scored (``on_prefill``, on this thread), so it sees each request's prompt, then
               its blocks, in order; it is told how many prompts are being prefilled (its trainer thread yields
               the core to them: ``dvi/trainer_share.py``)
      step     one block of every request in flight together (``speculative.drafter_step_batch``: each drafts
               alone, weighing its drafts against the shared pass (``CostCurve.batch_rows``), one batched
               verify pass, accept/crop each), then per request in turn: the drafter observes
               its block, the learner learns from it, the request commits its tokens and sends them
      finish   a request that hit EOS, max_tokens or a stop string leaves (its drafter's ``end``: the memory
               drafter's shared store keeps its output); its slot (and caches) go to the next

A client that goes away marks its request cancelled; it leaves at the next block boundary. Every request's blocks
reach the one learner in order, and the learner publishes new drafter weights at block boundaries (when it
observes a block), so a drafter's weights never change inside a block. Each request's tokens equal
``kangaroo_generate`` on it alone: the verifier decides every token.
"""
from __future__ import annotations

import math
import queue
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait

from kangaroo.cache_pool import ReusableCaches
from kangaroo.speculative import PrefillTargets, drafter_step_batch, prefill
from kangaroo_dvi.serve.request_state import Sequence

SHUTDOWN = "the server is shutting down"


class QueueFull(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Scheduler:
    def __init__(self, model, new_drafter, max_batch: int, queue_size: int, learner=None, metrics=None,
                 print_fn=print, cost=None):
        self.model, self.new_drafter, self.learner, self.cost = model, new_drafter, learner, cost
        self.metrics, self.print = metrics, print_fn
        self.max_batch, self.queue_size = max_batch, queue_size
        self.waiting: queue.Queue[Sequence] = queue.Queue()
        self.room = threading.BoundedSemaphore(max_batch + queue_size)  # one unit per request in the server
        self.inside = 0               # requests in the server (waiting, being admitted or decoding)
        self._count = threading.Lock()
        self.active: list[Sequence] = []
        self.prefilling: list[tuple[Sequence, Future]] = []  # their prompts on the prefill thread
        self._prefiller = ThreadPoolExecutor(1, thread_name_prefix="kdvi-prefill")
        self.pools = [ReusableCaches(model.new_caches) for _ in range(max_batch)]
        self.free = list(range(max_batch))[::-1]
        self.accepting = True
        self.request_s = 1.0          # moving average of a request's time in the server (for Retry-After)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kdvi-decode", daemon=True)

    # ------------------------------------------------------------------------------ any thread
    def start(self) -> None:
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        if not self.accepting:
            raise QueueFull(f"{SHUTDOWN}: retry on another instance or after the restart", self.retry_after())
        if not self.room.acquire(blocking=False):
            raise QueueFull(f"the server is at capacity ({self.max_batch} requests in flight and {self.queue_size} "
                            "waiting): retry after the Retry-After seconds", self.retry_after())
        with self._count:
            self.inside += 1
        self.waiting.put_nowait(seq)

    def state(self) -> tuple[int, int]:
        """(requests waiting, requests in flight)."""
        return self.waiting.qsize(), len(self.active) + len(self.prefilling)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: a request leaves about every request_s / max_batch seconds."""
        return max(1, min(60, math.ceil(self.request_s / self.max_batch)))

    def close(self, timeout: float) -> int:
        """Stop admitting, let the requests in flight and waiting finish for up to ``timeout`` seconds, then stop the
        thread (after its current block) and fail what is left (503). Returns how many were left."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while self.inside and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()
        self._prefiller.shutdown(wait=True)
        left = list(self.active) + [seq for seq, _ in self.prefilling]
        self.prefilling = []
        while not self.waiting.empty():
            left.append(self.waiting.get_nowait())
        self.active = []
        for seq in left:
            self._leave(seq)
            seq.fail(f"{SHUTDOWN}; this request did not finish within the drain timeout", 503)
        return len(left)

    # ------------------------------------------------------------------------------ decode thread
    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self._admit()
                self._join_prefilled()
                if self.learner is not None:
                    self.learner.prefilling(len(self.prefilling))
                if self.active:
                    self._step()
                elif self.prefilling:
                    wait([f for _, f in self.prefilling], timeout=0.05, return_when="FIRST_COMPLETED")
            except Exception as e:  # noqa: BLE001 - a bug: the requests of this step fail, the server keeps serving
                traceback.print_exc()
                for seq in self.active:
                    self._leave(seq)
                    seq.fail(f"internal error while decoding ({type(e).__name__}: {e})")
                self.active = []

    def _admit(self) -> None:
        while self.free:
            try:
                busy = self.active or self.prefilling
                seq = self.waiting.get_nowait() if busy else self.waiting.get(timeout=0.05)
            except queue.Empty:
                return
            if seq.cancelled:
                self._leave(seq)
                self.metrics.cancelled.inc()
                continue
            try:
                self._start(seq)
            except Exception as e:  # noqa: BLE001 - a bug: this request fails, the others go on
                traceback.print_exc()
                self._leave(seq)
                seq.fail(f"internal error while reading the prompt ({type(e).__name__}: {e})")

    def _start(self, seq: Sequence) -> None:
        seq.slot = self.free.pop()
        seq.drafter = self.new_drafter()
        seq.drafter.sample_with(seq.sampling)
        seq.history = seq.prompt[0].tolist()
        seq.caches = self.pools[seq.slot].get(seq.prompt_len + seq.max_tokens + seq.drafter.steps + 1)
        seq.drafter.begin(seq.history)
        positions = self.learner.prefill_positions if self.learner is not None else 0
        self.prefilling.append((seq, self._prefiller.submit(read_prompt, self.model, seq.prompt, seq.caches,
                                                            positions)))

    def _join_prefilled(self) -> None:
        """Requests whose prompt the prefill thread has read join the batch (or fail alone)."""
        for seq, fut in [p for p in self.prefilling if p[1].done()]:
            self.prefilling.remove((seq, fut))
            error = fut.exception()
            if error is not None:
                traceback.print_exception(error)
                self._leave(seq)
                seq.fail(f"internal error while reading the prompt ({type(error).__name__}: {error})")
            else:
                for targets in fut.result():  # before the request's first block
                    self._learn(targets, prefill=True)
                self.active.append(seq)

    def _step(self) -> None:
        for seq in [s for s in self.active if s.cancelled]:
            self.active.remove(seq)
            self._leave(seq)
            self.metrics.cancelled.inc()
        live = list(self.active)
        if not live:
            return
        self.metrics.batch.set(len(live))
        if self.cost is not None:  # each drafter weighs its drafts against the pass it shares with the others
            self.cost.batch_rows = len(live) - 1
        blocks = drafter_step_batch(self.model, [s.drafter for s in live], [s.history for s in live],
                                    [s.caches for s in live])
        for seq, blk in zip(live, blocks):
            seq.drafter.observe(blk)
            self._learn(blk)
            self.metrics.on_block(blk)
            n = len(seq.tokens)
            finished = seq.commit(blk.committed)
            self.metrics.on_tokens(len(seq.tokens) - n)
            if finished:
                self._finish(seq)

    def _learn(self, item, prefill: bool = False) -> None:
        """A block (or, ``prefill``, a prompt's dense targets) into the learner, which must not stop serving."""
        if self.learner is None:
            return
        try:
            (self.learner.on_prefill if prefill else self.learner.on_block)(item)
        except Exception as e:  # noqa: BLE001 - a failed trainer or checkpoint must not stop serving
            traceback.print_exc()
            self.print(f"[serve] the learner failed ({type(e).__name__}: {e}); serving goes on with the drafter as "
                       "it is, without learning")
            self.learner = None

    def _finish(self, seq: Sequence) -> None:
        self.active.remove(seq)
        seq.drafter.end(seq.tokens)  # the memory drafter keeps the output for the requests after it
        self._leave(seq)
        seq.done()
        self.metrics.on_finished(seq)
        self.request_s = 0.9 * self.request_s + 0.1 * (time.perf_counter() - seq.arrived)

    def _leave(self, seq: Sequence) -> None:
        """The request is out of the server: its slot (if it had one) and its room go to the next."""
        if seq.slot is not None:
            self.free.append(seq.slot)
        seq.slot, seq.caches = None, None
        with self._count:
            self.inside -= 1
        self.room.release()


def read_prompt(model, prompt, caches, positions: int) -> list[PrefillTargets]:
    """The prefill thread's job: ``prompt`` but its last token into ``caches``; with ``positions`` > 0, the dense
    targets the verifier head scored there (for the learner, handed over when the request joins), else none."""
    got: list[PrefillTargets] = []
    prefill(model, prompt, caches, positions, got.append if positions else None)
    return got
