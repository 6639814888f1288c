"""``--max-online-train-ms`` enforced: a token bucket of trainer time charged to the decode loop.

Every decoded block adds ``max_ms`` to the allowance (capped at ``burst`` blocks' worth); a trainer step may run
only when the allowance covers what a step is expected to cost (the EMA of measured steps, first guess 0), and
its measured time is then charged. So over any run the decode loop spends at most ``max_ms`` per block on
training, plus at most one step's overshoot; a step is still never interrupted part-way. ``max_ms is None``
disables the cap. The background trainer does not need it: it charges the decode loop nothing.
"""
from __future__ import annotations


class TrainBudget:
    def __init__(self, max_ms: float | None, burst_blocks: int = 1000, ema: float = 0.8):
        self.max_ms, self.ema = max_ms, ema
        self.cap = None if max_ms is None else max_ms * burst_blocks
        self.allowance = 0.0
        self.expected_ms = 0.0
        self.skipped = 0

    def on_block(self) -> None:
        if self.max_ms is not None:
            self.allowance = min(self.cap, self.allowance + self.max_ms)

    def allow(self) -> bool:
        if self.max_ms is None or (self.allowance > 0 and self.allowance >= self.expected_ms):
            return True
        self.skipped += 1
        return False

    def charge(self, ms: float) -> None:
        self.expected_ms = ms if self.expected_ms == 0 else self.ema * self.expected_ms + (1 - self.ema) * ms
        if self.max_ms is not None:
            self.allowance -= ms
