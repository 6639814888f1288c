"""What the shallow pass (layers [0, k) and the adapter) hands on: the verifier's input and the drafter's features
(``KangarooModel.forward_shallow`` makes it; ``kangaroo/blocks.py``'s ``Verification`` keeps it)."""
from __future__ import annotations

from typing import Optional

import torch


class ShallowOut:
    """The shallow pass over n inputs: ``h`` [1, n, d], the layer-k residual stream (pre-norm, the verifier's
    input), and ``hk`` [1, n, d], the post-norm drafter features the drafter head projects: given, or computed by
    ``features()`` on first use (a windowed adapter's layer)."""

    def __init__(self, h: torch.Tensor, hk: Optional[torch.Tensor] = None, features=None):
        if (hk is None) == (features is None):
            raise ValueError("ShallowOut takes hk or features, one of them")
        self.h, self._hk, self._features = h, hk, features

    @property
    def hk(self) -> torch.Tensor:
        if self._hk is None:
            self._hk, self._features = self._features(), None
        return self._hk
