"""The verifier's features, kept per sequence for the feature drafter: what the deep pass computed anyway.

``FeatureLog`` (one per sequence, ``KangarooCaches.features``, made only for a model with a feature drafter) holds,
for every position the deep layers ran on, the verifier's post-norm last-layer state f (``forward_deep``'s
output: the rows its head projects) and the token that was the input there. ``prefill`` writes the prompt's
positions, every verify pass the rows of its inputs x, d_1..d_m; ``crop`` rolls it back with the KV caches, so it
always holds exactly the committed positions: their TRUE features. No pass is added; a write is one copy of the
rows the pass returned.

The feature drafter reads it to bring its own cache up to date before it drafts (``kangaroo/drafters/feature.py``),
and a block copies out the rows its DVI tuples need (``FeatureContext``, ``Block.features``): entry k of the
drafter is (f_k, the token at k + 1), its training segment the ``window`` entries ending at k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FeatureContext:
    """Features f and input tokens at consecutive positions ``first_pos ..`` (copies), from which the feature
    drafter's training segments are cut."""
    f: torch.Tensor      # [c, d]
    ids: torch.Tensor    # [c] int64
    first_pos: int
    window: int

    @property
    def end(self) -> int:
        return self.first_pos + self.f.shape[0]

    def segment(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Entry k's segment: the features of positions ``max(0, k - window + 1) .. k`` (views), the tokens one
        position on, and the index of the first entry. k = -1 (the first position's row: no feature before it)
        gives an empty segment."""
        if k < 0:
            return self.f[:0], self.ids[:0], 0
        first = max(0, k - self.window + 1)
        if first < self.first_pos or k + 1 >= self.end:
            raise ValueError(f"feature segment {first}..{k} (tokens to {k + 1}) outside the context "
                             f"{self.first_pos}..{self.end - 1}")
        a, b = first - self.first_pos, k - self.first_pos + 1
        return self.f[a:b], self.ids[a + 1:b + 1], first


class FeatureLog:
    def __init__(self, max_len: int, d: int, dtype=torch.float32, device="cpu"):
        self.f = torch.zeros(max_len, d, dtype=dtype, device=device)
        self.ids = torch.zeros(max_len, dtype=torch.long, device=device)
        self.length = 0

    def write(self, start: int, ids, f: torch.Tensor) -> None:
        """The rows of a deep pass over positions ``[start, start + n)``: their input tokens ``ids`` and features
        f [n, d]. The log then ends there (a pass always appends to the committed positions)."""
        n = f.shape[0]
        if not 0 <= start <= self.length or start + n > self.f.shape[0]:
            raise ValueError(f"feature rows {start}..{start + n - 1} do not follow the {self.length} kept "
                             f"(room for {self.f.shape[0]})")
        self.f[start:start + n] = f
        self.ids[start:start + n] = torch.as_tensor(ids, dtype=torch.long, device=self.ids.device)
        self.length = start + n

    def crop(self, n: int) -> None:
        self.length = min(self.length, n)

    def keep(self, slots: list[int], at: int) -> None:
        """The rows ``slots`` moved to ``at, at + 1, ..``, the rest dropped (a token tree's accepted path, as
        ``KVCache.keep``)."""
        ix = torch.tensor(slots, device=self.f.device)
        self.f[at:at + len(slots)] = self.f.index_select(0, ix)
        self.ids[at:at + len(slots)] = self.ids.index_select(0, ix)
        self.length = at + len(slots)

    def context(self, first: int, end: int, window: int) -> FeatureContext:
        """A copy of positions ``[max(0, first), end)``."""
        first = max(0, first)
        if end > self.length:
            raise ValueError(f"feature rows to {end - 1} asked, {self.length} kept")
        return FeatureContext(self.f[first:end].clone(), self.ids[first:end].clone(), first, window)

    def nbytes(self) -> int:
        return self.f.numel() * self.f.element_size() + self.ids.numel() * 8
