"""A batch's drafter features through the trained adapter: hk = adapter(segment)[last row], with gradients.

Each tuple's segment (``Batch.seg_h``, right-aligned: its last row is the tuple's input, the ``seg_len`` rows
ending there are valid) goes through the adapter as it does at draft time: the last row's query attends over
the segment's rows (causal, the padding masked), each row rotated by its own RoPE position (``seg_pos`` is the
first valid row's). Only the last row's output is computed.
"""
from __future__ import annotations

import torch

from dvi.types import Batch


def segment_features(adapter, rotary_emb, batch: Batch) -> torch.Tensor:
    """[n, d] drafter features of the batch's tuples, in the adapter's dtype, differentiable in its weights."""
    weight = adapter.norm.weight
    h = batch.seg_h.to(device=weight.device, dtype=weight.dtype)
    W = h.shape[1]
    rows = torch.arange(W, device=h.device)[None, :]
    pad = (W - batch.seg_len.to(h.device))[:, None]
    positions = (batch.seg_pos.to(h.device)[:, None] + rows - pad).clamp(min=0)  # padding: any position, masked
    cos, sin = rotary_emb(h, positions)
    return adapter.forward_last(h, cos, sin, rows >= pad)
