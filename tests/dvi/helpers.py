"""Small builders the DVI tests share."""
import torch

from dvi.buffer import DVIRingBuffer
from dvi.config import BufferConfig

DTYPE_NAMES = {torch.float16: "float16", torch.float32: "float32"}


def ring(capacity, d_model, vocab_size, store, topk, dtype=torch.float16, seed=0, segment_window=0,
         defer_topk=False) -> DVIRingBuffer:
    cfg = BufferConfig(capacity=capacity, store=store, topk=topk, logits_dtype=DTYPE_NAMES[dtype], seed=seed)
    return DVIRingBuffer(cfg, d_model, vocab_size, segment_window=segment_window, defer_topk=defer_topk)
