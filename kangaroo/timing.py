"""Wall-clock timing that means the same on a GPU: CUDA kernels run asynchronously, so a timer reads the clock
only after the device has finished the work queued so far (a no-op on the CPU). The one fence every timer in
the project uses: ``now`` reads the clock, ``timed`` times one call."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def sync(device) -> None:
    """Wait for ``device`` (a torch.device or a string such as 'cuda:1') to finish its queued work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device) -> float:
    """``time.perf_counter()`` after synchronising ``device``."""
    sync(device)
    return time.perf_counter()


def timed(fn: Callable[[], T], device) -> tuple[T, float]:
    """``(fn(), seconds)``: the device is synchronised before the clock starts and before it stops."""
    t0 = now(device)
    out = fn()
    return out, now(device) - t0


def elapsed_ms(fn: Callable[[], object], device) -> float:
    """Milliseconds ``fn()`` takes, fenced as ``timed``."""
    return timed(fn, device)[1] * 1e3
