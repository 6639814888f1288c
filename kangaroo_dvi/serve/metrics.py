"""The numbers to watch while the server runs, in Prometheus text format at GET /metrics (one registry per server).

    kdvi_requests_total{endpoint,status}      HTTP requests answered, by status code (429/503: turned away)
    kdvi_requests_cancelled_total             requests whose client went away before the end
    kdvi_queue_depth / kdvi_requests_in_flight   waiting for a slot / being decoded
    kdvi_generated_tokens_total, kdvi_tokens_per_second   output tokens (rate over the last WINDOW_S seconds)
    kdvi_blocks_total{source}, kdvi_committed_tokens_total{source}, kdvi_mean_accepted_length{source}
                                              per draft source: the chain's drafters (ngram, memory, self) and none
                                              (a block that drafted nothing), counted as the chain counts them
                                              (``kangaroo.drafters.counters``: DrafterCounters, tally)
    kdvi_top1_agree                           the self-drafter's top-1 agreement with the verifier over probed blocks:
                                              the last TOP1_WINDOW blocks that have one (docs/dvi.md); it moves with
                                              the gate and the lookups, which the held-out gauges do not
    kdvi_heldout_top1{drafter}, kdvi_heldout_accept_len{drafter}
                                              each trainable drafter's newest evaluation on the fixed held-out set
                                              (dvi/heldout.py: top-1 agreement, teacher-forced accepted length; NaN
                                              before the first, or without a learner)
    kdvi_trainer_steps, kdvi_lora_version, kdvi_global_step   the learner (0 when not learning)
    kdvi_trainer_share, kdvi_trainer_owed_steps   the trainer thread's time over wall time while blocks were decoded
                                              (bounded by --dvi-trainer-share; NaN without a bound), and the steps
                                              that bound deferred (dvi/trainer_share.py)
    kdvi_batch_size                           requests in the last decode step
    kdvi_time_to_first_token_seconds, kdvi_request_seconds   histograms
"""
from __future__ import annotations

import collections
import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from kangaroo.drafters.counters import NONE, DrafterCounters, tally

NAN = float("nan")
WINDOW_S = 10.0
TOP1_WINDOW = 256
SOURCES = ("ngram", "memory", "self", NONE)  # the sources of the default chain, shown from the start
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    def __init__(self, learner=None, sources: tuple[str, ...] = SOURCES):
        """``learner``: a ``ServeLearner`` or None; ``sources``: the draft sources shown from the start (others
        appear with their first block). Set ``state`` to the scheduler's ``() -> (waiting, in flight)``."""
        self.state = lambda: (0, 0)
        r = self.registry = CollectorRegistry()
        self.requests = Counter("kdvi_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.cancelled = Counter("kdvi_requests_cancelled", "requests whose client went away", registry=r)
        self.tokens = Counter("kdvi_generated_tokens", "output tokens", registry=r)
        self.blocks = Counter("kdvi_blocks", "verify blocks by draft source", ["source"], registry=r)
        self.committed = Counter("kdvi_committed_tokens", "tokens committed by blocks of each source", ["source"],
                                 registry=r)
        self.ttft = Histogram("kdvi_time_to_first_token_seconds", "arrival to first token", buckets=LATENCY_BUCKETS,
                              registry=r)
        self.duration = Histogram("kdvi_request_seconds", "arrival to last token", buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Gauge("kdvi_batch_size", "requests in the last decode step", registry=r)
        self._recent: collections.deque = collections.deque()  # (time, tokens)
        self._top1: collections.deque = collections.deque(maxlen=TOP1_WINDOW)
        self.by_source: dict[str, DrafterCounters] = {}       # every request's blocks, by draft source
        self._lock = threading.Lock()
        gauges = {"kdvi_queue_depth": ("requests waiting for a slot", lambda: self.state()[0]),
                  "kdvi_requests_in_flight": ("requests being decoded", lambda: self.state()[1]),
                  "kdvi_tokens_per_second": (f"output tokens per second over the last {WINDOW_S:g} s",
                                             self.tokens_per_second),
                  "kdvi_top1_agree": (f"self-drafter top-1 agreement, last {TOP1_WINDOW} blocks with one",
                                      self.top1_agree)}
        for name, attr in (("kdvi_trainer_steps", "trainer_steps"), ("kdvi_lora_version", "lora_version"),
                           ("kdvi_trainer_share", "trainer_share"), ("kdvi_trainer_owed_steps", "owed_steps")):
            gauges[name] = (name[5:].replace("_", " "), lambda a=attr: getattr(learner, a) if learner else 0)
        gauges["kdvi_global_step"] = ("blocks the learner has seen (resumed ones too)",
                                      lambda: learner.dvi.global_step if learner else 0)
        for name, (doc, fn) in gauges.items():
            Gauge(name, doc, registry=r).set_function(fn)
        self._mean = Gauge("kdvi_mean_accepted_length", "tokens committed per block, by draft source", ["source"],
                           registry=r)
        self._shown: set[str] = set()
        for s in sources:
            self._show(s)
        self._heldout_gauges(learner)

    def _heldout_gauges(self, learner) -> None:
        ev = learner.dvi.heldout if learner is not None else None
        top1 = Gauge("kdvi_heldout_top1", "top-1 agreement on the fixed held-out set, newest evaluation", ["drafter"],
                     registry=self.registry)
        length = Gauge("kdvi_heldout_accept_len", "teacher-forced accepted length on the fixed held-out set, newest "
                       "evaluation", ["drafter"], registry=self.registry)
        for d in ev.drafters if ev is not None else ():
            for gauge, key in ((top1, "top1"), (length, "accept_len")):
                gauge.labels(d.name).set_function(lambda name=d.name, k=key: ev.latest().get(name, {}).get(k, NAN))

    def _show(self, source: str) -> None:
        if source not in self._shown:
            self._shown.add(source)
            self._mean.labels(source).set_function(lambda: self.mean_accepted(source))

    # ------------------------------------------------------------------------------ decode thread
    def on_block(self, blk) -> None:
        source, n = blk.source, len(blk.committed)
        self.blocks.labels(source).inc()
        self.committed.labels(source).inc(n)
        self._show(source)
        with self._lock:
            tally(self.by_source, source, blk.asked_ms, blk.drafted, blk.accepted, n, blk.verification.ms)
            if blk.top1_agree is not None:
                self._top1.append(bool(blk.top1_agree))

    def on_tokens(self, n: int) -> None:
        if n:
            self.tokens.inc(n)
            with self._lock:
                self._recent.append((time.monotonic(), n))

    def on_finished(self, seq) -> None:
        now = time.perf_counter()
        if seq.first_token_at is not None:
            self.ttft.observe(seq.first_token_at - seq.arrived)
        self.duration.observe(now - seq.arrived)

    # ------------------------------------------------------------------------------ read at scrape time
    def tokens_per_second(self) -> float:
        cutoff = time.monotonic() - WINDOW_S
        with self._lock:
            while self._recent and self._recent[0][0] < cutoff:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / WINDOW_S

    def top1_agree(self) -> float:
        with self._lock:
            return sum(self._top1) / len(self._top1) if self._top1 else float("nan")

    def mean_accepted(self, source: str) -> float:
        with self._lock:
            c = self.by_source.get(source)
            return c.committed / c.blocks if c is not None and c.blocks else float("nan")

    def text(self) -> bytes:
        return generate_latest(self.registry)
