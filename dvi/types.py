"""Shared DVI types: one training tuple (what the loop pushes) and one batch (what the trainer reads). The buffer's
storage layout stays inside ``dvi/buffer.py``; a bad DVI setting raises ``common.errors.ConfigError``."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple, Optional

import torch


class DVITrainSample(NamedTuple):
    hk: torch.Tensor                 # [d_model]: the drafter's features at this position (stored float16)
    token: int                       # the drafted token
    z_phi: torch.Tensor              # [V] the verifier's logits there (the buffer keeps all or the top-K)
    reward: int                      # 1 accepted, 0 rejected
    pos: int                         # 1..m for accepted, m+1 for the first reject
    is_first_reject: bool
    kd_only: bool = False            # dense supervision (a prompt or committed position no draft was judged at):
                                     # the KD terms use it, CE and PG skip it (token/reward carry no verdict)
    seg_h: Optional[torch.Tensor] = None  # trained adapter: [c, d] layer-k residuals of the c <= W positions ending
                                          # at this tuple's input (its own row last), what the adapter attends over
    seg_pos: int = 0                 # the RoPE position of seg_h's first row
    # feature drafter: its entry's segment, the c <= W entries ending at the one the verifier's row judges (its own
    # row last): the features f of their positions and the tokens one position on (empty: no entry, at position 0)
    feat_f: Optional[torch.Tensor] = None    # [c, d]
    feat_ids: Optional[torch.Tensor] = None  # [c]
    feat_pos: int = 0                # the index of the segment's first entry (its RoPE position)


@dataclass
class Batch:
    """n tuples drawn from the buffer. Exactly one of ``z_phi`` (store full) or ``z_idx``/``z_val`` (top-K) is set."""
    hk: torch.Tensor                        # [n, d] float16
    token: torch.Tensor                     # [n] int64
    reward: torch.Tensor                    # [n] float32 (1 accepted, 0 rejected)
    pos: torch.Tensor                       # [n] int64
    is_first_reject: torch.Tensor           # [n] bool
    z_phi: Optional[torch.Tensor] = None    # [n, V] verifier logits (store full)
    z_idx: Optional[torch.Tensor] = None    # [n, K] int64 top-K indices (store topk)
    z_val: Optional[torch.Tensor] = None    # [n, K] their logits (store topk)
    kd_only: Optional[torch.Tensor] = None  # [n] bool: KD-only rows (dense supervision); None: all False
    # trained adapter: each tuple's segment, right-aligned: seg_h[b, W-1] is the tuple's own input, the
    # seg_len[b] rows ending there are valid, rows before them are padding; seg_pos[b] is the RoPE position of the
    # first valid row (row W - seg_len[b])
    seg_h: Optional[torch.Tensor] = None    # [n, W, d] float16
    seg_len: Optional[torch.Tensor] = None  # [n] int64, 1..W
    seg_pos: Optional[torch.Tensor] = None  # [n] int64
    # feature drafter: each tuple's segment, right-aligned as seg_h (feat_len 0: the tuple has none)
    feat_f: Optional[torch.Tensor] = None    # [n, W, d] float16
    feat_ids: Optional[torch.Tensor] = None  # [n, W] int64
    feat_len: Optional[torch.Tensor] = None  # [n] int64, 0..W
    feat_pos: Optional[torch.Tensor] = None  # [n] int64

    def __post_init__(self):
        if self.kd_only is None:
            self.kd_only = torch.zeros_like(self.token, dtype=torch.bool)
        if (self.z_phi is None) == (self.z_idx is None or self.z_val is None):
            raise ValueError("a Batch holds either z_phi (store full) or z_idx and z_val (store topk)")
        if len({self.seg_h is None, self.seg_len is None, self.seg_pos is None}) != 1:
            raise ValueError("a Batch holds all of seg_h, seg_len, seg_pos (trained adapter) or none")
        if len({self.feat_f is None, self.feat_ids is None, self.feat_len is None, self.feat_pos is None}) != 1:
            raise ValueError("a Batch holds all of feat_f, feat_ids, feat_len, feat_pos (feature drafter) or none")

    def subset(self, rows: torch.Tensor) -> "Batch":
        """The tuples at ``rows`` (a bool mask or indices), every field alike."""
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                        for f in fields(self)})

    @property
    def store(self) -> str:
        return "full" if self.z_phi is not None else "topk"

    def __len__(self) -> int:
        return int(self.token.shape[0])
