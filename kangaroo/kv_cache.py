"""A preallocated KV cache for a stack of decoder layers, with one length.

Every layer of the stack writes its keys/values at ``[length, length + n)`` during one forward of the stack,
then the stack calls ``advance(n)``. Rolling back after a rejected draft is ``crop(n)``: a length change,
nothing else. Positions past ``length`` hold stale values that the next write overwrites. After a token tree
(``kangaroo/token_tree.py``) is verified, ``keep(slots, at)`` moves the accepted path's rows to consecutive
positions from ``at`` and drops the rest.

``row_width`` > 0 also keeps one row per position (``rows`` [batch, max_len, row_width]; the shallow cache of a
trained adapter keeps the layer-k residual h there, which the adapter's training segments are cut from). Rows are
written at ``[length, length + n)`` like keys and values, so ``crop`` rolls them back too.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", batch: int = 1,
                 row_width: int = 0):
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.rows = torch.zeros(batch, max_len, row_width, dtype=dtype, device=device) if row_width else None
        self.max_len = max_len
        self.length = 0

    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` ([B, H, n, D]) at ``[length, length+n)`` of ``layer``; return that layer's keys and
        values for ``[0, length+n)``. ``length`` itself moves only in ``advance``."""
        end = self.check_room(k.shape[2])
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def write_rows(self, h: torch.Tensor) -> None:
        """Store ``h`` [B, n, row_width] at ``[length, length+n)`` of ``rows``."""
        self.rows[:, self.length:self.check_room(h.shape[1])] = h

    def read_rows(self, start: int, end: int) -> torch.Tensor:
        """A copy of the rows at positions ``[start, end)`` of batch row 0, [end - start, row_width]."""
        if not 0 <= start <= end <= self.length:
            raise ValueError(f"rows [{start}, {end}) outside the cached 0..{self.length}")
        return self.rows[0, start:end].clone()

    def check_room(self, n: int) -> int:
        """The end position after ``n`` more positions; raises if the cache cannot hold them."""
        end = self.length + n
        if end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        return end

    def advance(self, n: int) -> None:
        self.length += n

    def crop(self, n: int) -> None:
        """Keep the first ``n`` positions (roll back a rejected draft)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"crop({n}) outside 0..{self.length}")
        self.length = n

    def keep(self, slots: list[int], at: int) -> None:
        """Move the positions ``slots`` (ascending, each >= ``at``) to ``at, at + 1, ..`` in every layer (and the
        rows), then keep the first ``at + len(slots)`` positions: a verified tree's accepted path, made consecutive.
        Each moved key keeps its RoPE: a tree node's position is its depth, the slot it moves to."""
        if any(b <= a for a, b in zip(slots, slots[1:])) or (slots and (slots[0] < at or slots[-1] >= self.length)):
            raise ValueError(f"keep({slots}, {at}): slots must ascend within {at}..{self.length - 1}")
        moved = [(s, at + j) for j, s in enumerate(slots) if s != at + j]
        if moved:
            src = torch.tensor([s for s, _ in moved], device=self.k.device)
            dst = torch.tensor([d for _, d in moved], device=self.k.device)
            self.k[:, :, :, dst] = self.k[:, :, :, src]   # a gather first: no row is read after it is written
            self.v[:, :, :, dst] = self.v[:, :, :, src]
            if self.rows is not None:
                self.rows[:, dst] = self.rows[:, src]
        self.crop(at + len(slots))

    def nbytes(self) -> int:
        rows = 0 if self.rows is None else self.rows.numel() * self.rows.element_size()
        return self.k.numel() * self.k.element_size() * 2 + rows
