"""Wall-clock timing that means the same on a GPU: CUDA kernels run asynchronously, so a timer reads the clock
only after the device has finished the work queued so far (a no-op on the CPU)."""
from __future__ import annotations

import time

import torch


def sync(device) -> None:
    """Wait for ``device`` (a torch.device or a string such as 'cuda:1') to finish its queued work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device) -> float:
    """``time.perf_counter()`` after synchronising ``device``."""
    sync(device)
    return time.perf_counter()
