"""Weight formats the lean CPU engine reads as stored: float32, bfloat16, float16 and the GGUF blocks Q8_0, Q4_0,
Q4_1 (``kangaroo/csrc/formats.h`` expands them in registers). A ``StoredWeight`` is one matrix [rows, cols] as
bytes in one format; its float32 values are exactly what dequantization gives (gguf-py's, which transformers uses
to load a .gguf), so the model the plain path runs on those floats and the engine reading the bytes compute the
same numbers.

    Q8_0  blocks of 32: f16 d, int8 q[32]          w = d * q
    Q4_0  blocks of 32: f16 d, uint8 qs[16]        w = d * (q - 8)
    Q4_1  blocks of 32: f16 d, f16 m, uint8 qs[16] w = (d * q) + m
          (Q4: q of weights 0..15 = low nibbles of qs, of weights 16..31 = high nibbles)

``quantize`` makes such blocks from float weights (ggml's reference rounding) for conversions and tests;
``dequantize`` is the reference expansion in PyTorch (two float32 roundings for Q4_1, as gguf-py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS = ("float32", "bfloat16", "float16", "q8_0", "q4_0", "q4_1")  # position = the C++ Format code
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}                     # per 32 weights
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class StoredWeight:
    fmt: str
    data: torch.Tensor  # contiguous: a float tensor [rows, cols] (float formats) or uint8 [rows, row_bytes]
    rows: int
    cols: int

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown weight format {self.fmt!r}: use one of {', '.join(FORMATS)}")
        if self.data.nbytes != self.rows * row_bytes(self.fmt, self.cols):
            raise ValueError(f"{self.fmt} weight [{self.rows}, {self.cols}] needs "
                             f"{self.rows * row_bytes(self.fmt, self.cols)} bytes, got {self.data.nbytes}")

    @property
    def code(self) -> int:
        return FORMATS.index(self.fmt)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def select_rows(self, index: torch.Tensor) -> StoredWeight:
        """The rows ``index`` (a permutation or a subset), as stored: rows of blocks are independent."""
        return StoredWeight(self.fmt, self.data[index].contiguous(), len(index), self.cols)


def row_bytes(fmt: str, cols: int) -> int:
    if fmt in FLOAT_DTYPES:
        return cols * FLOAT_DTYPES[fmt].itemsize
    if cols % 32:
        raise ValueError(f"{fmt} stores blocks of 32 weights: {cols} columns is not a multiple of 32")
    return cols // 32 * BLOCK_BYTES[fmt]


def concat_rows(parts: list[StoredWeight]) -> StoredWeight:
    """Matrices of one format and width stacked by rows (q/k/v, gate/up fused)."""
    fmt, cols = parts[0].fmt, parts[0].cols
    if any(p.fmt != fmt or p.cols != cols for p in parts):
        raise ValueError("concat_rows: every part must have the same format and columns")
    return StoredWeight(fmt, torch.cat([p.data for p in parts]).contiguous(), sum(p.rows for p in parts), cols)


def _f16(x: torch.Tensor) -> torch.Tensor:
    """float16 [n] -> its 2 little-endian bytes each, [n, 2]."""
    return x.to(torch.float16).contiguous().view(torch.uint8).view(-1, 2)


def _blocks_of(w: torch.Tensor) -> torch.Tensor:
    rows, cols = w.shape
    if cols % 32:
        raise ValueError(f"block formats store blocks of 32 weights: {cols} columns is not a multiple of 32")
    return w.detach().float().reshape(rows * cols // 32, 32)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    return (q[:, :16] | (q[:, 16:] << 4)).to(torch.uint8)


def quantize(w: torch.Tensor, fmt: str) -> StoredWeight:
    """``w`` [rows, cols] in ``fmt`` (lossy except float32): ggml's reference quantizers, or rounding to 16 bits."""
    rows, cols = w.shape
    if fmt in FLOAT_DTYPES:
        return StoredWeight(fmt, w.detach().to(FLOAT_DTYPES[fmt]).contiguous(), rows, cols)
    x = _blocks_of(w)
    if fmt == "q8_0":
        d = x.abs().amax(1) / 127
        inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
        q = torch.round(x * inv[:, None]).clamp(-127, 127).to(torch.int8).view(torch.uint8)  # round half to even
        parts = [_f16(d), q]
    elif fmt == "q4_0":
        mx = x.gather(1, x.abs().argmax(1, keepdim=True))[:, 0]
        d = mx / -8
        inv = torch.where(d != 0, 1 / d, torch.zeros_like(d))
        q = (x * inv[:, None] + 8.5).floor().clamp(0, 15).to(torch.int64)
        parts = [_f16(d), _pack_nibbles(q)]
    elif fmt == "q4_1":
        lo, hi = x.amin(1), x.amax(1)
        d = (hi - lo) / 15
        inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
        q = ((x - lo[:, None]) * inv[:, None] + 0.5).floor().clamp(0, 15).to(torch.int64)
        parts = [_f16(d), _f16(lo), _pack_nibbles(q)]
    else:
        raise ValueError(f"unknown weight format {fmt!r}: use one of {', '.join(FORMATS)}")
    return StoredWeight(fmt, torch.cat(parts, 1).reshape(rows, -1).contiguous(), rows, cols)


def dequantize(s: StoredWeight) -> torch.Tensor:
    """The float32 values of ``s`` [rows, cols], computed as gguf-py does (the reference the engine must equal)."""
    if s.fmt in FLOAT_DTYPES:
        return s.data.float().reshape(s.rows, s.cols)
    b = s.data.reshape(-1, BLOCK_BYTES[s.fmt])
    d = b[:, :2].contiguous().view(torch.float16).float()
    if s.fmt == "q8_0":
        w = d * b[:, 2:].contiguous().view(torch.int8).float()
    else:
        qs = b[:, -16:].to(torch.int64)
        q = torch.cat([qs & 15, qs >> 4], 1)
        if s.fmt == "q4_0":
            w = d * (q - 8).float()
        else:
            m = b[:, 2:4].contiguous().view(torch.float16).float()
            w = (d * q.float()) + m
    return w.reshape(s.rows, s.cols)
