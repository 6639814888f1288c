"""The trainer thread's share of the machine, following the load (``--dvi-trainer-share``): a token bucket of wall
time, as a sidecar on a core of its own would train at its own pace however fast the blocks come.

    busy  (a block within the last IDLE_AFTER_S)   the allowance refills at ``share`` seconds per second, up to
                                                  BURST_S; a step may start only while it is >= 0, and its time
                                                  (its hooks, the held-out evaluation, included) is charged after
    prompts (busy, and prompts being prefilled)  a step waits for a full bucket (BURST_S): the trainer yields the
                                                  core to the prefill thread (a request's time to its first token,
                                                  and to the batch) but keeps its share, taken in bursts
    idle  (no block for IDLE_AFTER_S, or released)  no cap: the allowance is full, the trainer steps freely

So over any busy stretch of T seconds the trainer spends at most ``share * T + BURST_S`` plus one step. Its
cadence stays --dvi-update-every blocks, but a step due while the bucket is empty waits: as the load grows (more
blocks per second: 4 requests make 4 blocks a batched pass), its steps per block fall and its share stays bounded,
instead of its demand growing with the block rate until it takes a core the serving threads need. The steps it
deferred are owed (at most ``max_owed``: a buffer's worth of batches; older tuples are overwritten anyway) and
taken when the load lets it: on idle time, or at the end (``release``: the decode side stopped).

Pure but for the clock (``clock``: seconds, monotonic), so the policy is tested with a fake one.
"""
from __future__ import annotations

import time

BURST_S = 0.25      # trainer time it may spend at once after an idle stretch (about three steps on the bundled model)
EPS_S = 1e-6        # a microsecond of trainer time is nothing (and float sums may miss 0 by less)
IDLE_AFTER_S = 1.0  # no block for this long: the decode side is idle (between requests a prefill takes ~0.2 s)
POLL_S = 0.02       # waiting out prompts being prefilled: look again this often


class TrainerShare:
    def __init__(self, share: float, max_owed: int, burst_s: float = BURST_S, idle_after_s: float = IDLE_AFTER_S,
                 clock=time.monotonic):
        if not 0 < share <= 1:
            raise ValueError(f"a trainer share is in (0, 1], got {share}")
        self.share, self.max_owed, self.burst_s, self.idle_after_s = share, max(0, max_owed), burst_s, idle_after_s
        self.clock = clock
        self.allowance = burst_s     # seconds of trainer time it may still spend (negative: in debt)
        self.last_block: float | None = None
        self.busy_since = 0.0        # the first block after the last idle stretch
        self.released = False
        self.prompts = 0             # prompts being prefilled now (the decode side says)
        self.busy_wall_s = self.busy_spent_s = 0.0  # totals while busy: wall time, trainer time charged
        self._t = clock()

    # ------------------------------------------------------------------------------ decode side
    def on_block(self) -> None:
        """A block was decoded now (the decode thread: two floats written)."""
        now = self.clock()
        if not self.busy(now):
            self.busy_since = now
        self.last_block = now

    def prefilling(self, n: int) -> None:
        """``n`` prompts are being prefilled now (the decode thread, each turn: one int written)."""
        self.prompts = n

    def release(self) -> None:
        """The decode side stopped (shutdown): no cap from now on, so the owed steps can be paid."""
        self.released = True

    # ------------------------------------------------------------------------------ trainer side
    def busy(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return not self.released and self.last_block is not None and now - self.last_block < self.idle_after_s

    def wait_s(self) -> float:
        """Seconds to wait before the next step may start (0: now)."""
        now = self.clock()
        self._refill(now)
        need = self.burst_s if self.prompts else 0.0  # prompts being read: only a full bucket may step
        if self.allowance >= need - EPS_S or not self.busy(now):
            return 0.0
        return min((need - self.allowance) / self.share, POLL_S if self.prompts else self.idle_after_s)

    def charge(self, seconds: float) -> None:
        """A step (and its hooks) took ``seconds`` of the trainer thread's wall time."""
        now = self.clock()
        if self.busy(now):
            self.busy_spent_s += seconds
        self._refill(now, spent=seconds)

    def used_share(self) -> float:
        """Trainer time over wall time while busy, so far (0 before any busy time)."""
        return self.busy_spent_s / self.busy_wall_s if self.busy_wall_s > 0 else 0.0

    def _refill(self, now: float, spent: float = 0.0) -> None:
        """The time since the last refill: its busy part at ``share``, less ``spent`` (the step that took it: its
        refill is not lost to the cap), up to BURST_S; an idle part fills it up."""
        t, self._t = self._t, now
        busy = 0.0
        if not self.released and self.last_block is not None:
            busy = max(0.0, min(now, self.last_block + self.idle_after_s) - max(t, self.busy_since))
        self.busy_wall_s += busy
        self.allowance = min(self.burst_s, self.allowance + self.share * busy - spent)
        if not self.busy(now):
            self.allowance = self.burst_s
