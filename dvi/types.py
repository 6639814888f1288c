"""Shared DVI types: one training tuple, and the error raised for a bad ``--dvi-*`` setting."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from kangaroo.errors import UserError


class DVIConfigError(UserError, ValueError):
    """A bad DVI flag value. A ``UserError`` (drivers print it as one line) and a ``ValueError``."""


class DVITrainSample(NamedTuple):
    hk: torch.Tensor                 # [d_model] float16: the drafter's features at this position
    token: int                       # the drafted token
    reward: int                      # 1 accepted, 0 first reject
    pos: int                         # 1..m for accepted, m+1 for the first reject
    z_phi: Optional[torch.Tensor]    # [V] verifier logits if store=full
    z_idx: Optional[torch.Tensor]    # [K] top-K indices of the verifier logits if store=topk
    z_val: Optional[torch.Tensor]    # [K] their logits if store=topk
    is_first_reject: bool
