"""A fixed-size ring buffer of DVI training tuples, preallocated at construction.

Per slot: hk [d] fp16, token int64, reward int8, pos int32, is_first_reject bool, kd_only bool, and the verifier's
logits:
``store="full"`` keeps z_phi [V]; ``store="topk"`` keeps only its top-K (indices int32, values). The top-K path
never builds a dense [*, V] tensor beyond the z_phi handed to ``push``.

``segment_window`` W > 0 (a trained adapter): each slot also keeps the tuple's segment, the layer-k residuals of
the up to W positions ending at its input, [W, d] fp16 (right-aligned, zero padding), its valid row count (int16)
and the RoPE position of its first valid row (int32); every pushed tuple must carry one. Allocated only then.
``feature_window`` W' > 0 (a feature drafter): likewise the feature drafter's segment, its entries' features
[W', d] fp16 and tokens [W'] int32, their count (int16; 0: none) and the first entry's index (int32).

Thread-safe: pushes (decode thread) and samples (trainer thread) take one lock, so a sample never sees a
half-written slot. ``defer_topk`` (the threaded trainer): ``push`` writes the slot but keeps a reference to z_phi,
and the top-K (~0.3 ms a row over 49,152 logits, one or more rows a block) is taken by the next ``sample``, on
the trainer's thread; a sample therefore sees exactly what an eager push would have written.
"""
from __future__ import annotations

import threading

import torch

from dvi.config import BufferConfig
from dvi.types import Batch, DVITrainSample

MAX_DEFERRED = 256  # deferred rows held at most (each keeps its block's logits alive); past that, push takes the top-K


class DVIRingBuffer:
    """``push(sample)`` one tuple, ``sample(n) -> Batch``; the storage layout below is this class's own."""

    def __init__(self, cfg: BufferConfig, d_model: int, vocab_size: int, device: str = "cpu", segment_window: int = 0,
                 defer_topk: bool = False, feature_window: int = 0):
        if d_model < 1 or vocab_size < 1 or segment_window < 0 or feature_window < 0:
            raise ValueError(f"need d_model, vocab_size >= 1 and segment_window, feature_window >= 0, got {d_model}, "
                             f"{vocab_size}, {segment_window}, {feature_window}")
        cfg.check_vocab(vocab_size)  # the config checked its own values when it was made
        self.capacity, self.d_model, self.vocab_size, self.store = cfg.capacity, d_model, vocab_size, cfg.store
        self.topk = cfg.topk if cfg.store == "topk" else None
        self.device = torch.device(device)
        capacity, kw = cfg.capacity, dict(device=self.device)
        self.hk = torch.zeros(capacity, d_model, dtype=torch.float16, **kw)
        self.token = torch.zeros(capacity, dtype=torch.int64, **kw)
        self.reward = torch.zeros(capacity, dtype=torch.int8, **kw)
        self.pos = torch.zeros(capacity, dtype=torch.int32, **kw)
        self.is_first_reject = torch.zeros(capacity, dtype=torch.bool, **kw)
        self.kd_only = torch.zeros(capacity, dtype=torch.bool, **kw)
        self.z_phi = self.z_idx = self.z_val = None
        if cfg.store == "full":
            self.z_phi = torch.zeros(capacity, vocab_size, dtype=cfg.torch_logits_dtype, **kw)
        else:
            self.z_idx = torch.zeros(capacity, cfg.topk, dtype=torch.int32, **kw)
            self.z_val = torch.zeros(capacity, cfg.topk, dtype=cfg.torch_logits_dtype, **kw)
        self.segment_window = segment_window
        self.seg_h = self.seg_len = self.seg_pos = None
        if segment_window:
            self.seg_h = torch.zeros(capacity, segment_window, d_model, dtype=torch.float16, **kw)
            self.seg_len = torch.zeros(capacity, dtype=torch.int16, **kw)
            self.seg_pos = torch.zeros(capacity, dtype=torch.int32, **kw)
        self.feature_window = feature_window
        self.feat_f = self.feat_ids = self.feat_len = self.feat_pos = None
        if feature_window:
            self.feat_f = torch.zeros(capacity, feature_window, d_model, dtype=torch.float16, **kw)
            self.feat_ids = torch.zeros(capacity, feature_window, dtype=torch.int32, **kw)
            self.feat_len = torch.zeros(capacity, dtype=torch.int16, **kw)
            self.feat_pos = torch.zeros(capacity, dtype=torch.int32, **kw)
        self._next = 0   # slot the next push writes (the oldest one once full)
        self._size = 0
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self._lock = threading.Lock()
        self.defer_topk = defer_topk and self.topk is not None
        self._pending: list[tuple[int, int, torch.Tensor]] = []  # (slot, push number, z_phi): top-K not taken yet
        self._pushes, self._slot_push = 0, [0] * self.capacity    # which push wrote each slot last

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def _storages(self) -> list[torch.Tensor]:
        return [t for t in (self.hk, self.token, self.reward, self.pos, self.is_first_reject, self.kd_only,
                            self.z_phi, self.z_idx, self.z_val, self.seg_h, self.seg_len, self.seg_pos,
                            self.feat_f, self.feat_ids, self.feat_len, self.feat_pos)
                if t is not None]

    def bytes_per_slot(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self._storages())

    def _check(self, s: DVITrainSample) -> None:
        if tuple(s.hk.shape) != (self.d_model,):
            raise ValueError(f"hk must have shape [{self.d_model}], got {tuple(s.hk.shape)}")
        if tuple(s.z_phi.shape) != (self.vocab_size,):
            raise ValueError(f"z_phi must have shape [{self.vocab_size}], got {tuple(s.z_phi.shape)}")
        if not 0 <= int(s.token) < self.vocab_size:
            raise ValueError(f"token {int(s.token)} is outside the vocabulary 0..{self.vocab_size - 1}")
        if self.segment_window and (s.seg_h is None or s.seg_h.dim() != 2 or s.seg_h.shape[1] != self.d_model
                                    or not 1 <= s.seg_h.shape[0] <= self.segment_window):
            got = None if s.seg_h is None else tuple(s.seg_h.shape)
            raise ValueError(f"seg_h must have shape [1..{self.segment_window}, {self.d_model}] (a trained adapter's "
                             f"segment), got {got}")
        if self.feature_window:
            f, ids = s.feat_f, s.feat_ids
            if (f is None or ids is None or f.dim() != 2 or f.shape[1] != self.d_model
                    or f.shape[0] > self.feature_window or tuple(ids.shape) != (f.shape[0],)):
                got = None if f is None else tuple(f.shape)
                raise ValueError(f"feat_f must have shape [0..{self.feature_window}, {self.d_model}] with as many "
                                 f"feat_ids (a feature drafter's segment), got {got}")

    @torch.no_grad()
    def push(self, s: DVITrainSample) -> None:
        """Write one tuple into the next slot (the oldest once full); top-K stores only topk(z_phi, K)."""
        self._check(s)
        defer = self.defer_topk and len(self._pending) < MAX_DEFERRED
        top = torch.topk(s.z_phi, self.topk) if self.topk and not defer else None  # z_phi never cast or copied whole
        with self._lock:
            i = self._next
            self.hk[i].copy_(s.hk)
            self.token[i] = int(s.token)
            self.reward[i] = int(s.reward)
            self.pos[i] = int(s.pos)
            self.is_first_reject[i] = bool(s.is_first_reject)
            self.kd_only[i] = bool(s.kd_only)
            if self.segment_window:
                self._write_segment(i, s.seg_h, s.seg_pos)
            if self.feature_window:
                self._write_feature_segment(i, s.feat_f, s.feat_ids, s.feat_pos)
            self._pushes += 1
            self._slot_push[i] = self._pushes
            if self.topk is None:
                self.z_phi[i].copy_(s.z_phi)
            elif defer:
                self._pending.append((i, self._pushes, s.z_phi))
            else:
                self._write_topk(i, top)
            self._next = (i + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)

    def _write_topk(self, i: int, top) -> None:
        self.z_val[i].copy_(top.values)
        self.z_idx[i].copy_(top.indices)

    def _topks(self, pending: list) -> list:
        return [(i, n, torch.topk(z, self.topk)) for i, n, z in pending]

    def _apply(self, tops: list) -> None:  # a slot pushed again since keeps its newer tuple
        for i, n, top in tops:
            if self._slot_push[i] == n:
                self._write_topk(i, top)

    def _write_segment(self, i: int, rows: torch.Tensor, first_pos: int) -> None:
        c = rows.shape[0]
        pad = self.segment_window - c
        self.seg_h[i, :pad].zero_()
        self.seg_h[i, pad:].copy_(rows)
        self.seg_len[i] = c
        self.seg_pos[i] = int(first_pos)

    def _write_feature_segment(self, i: int, f: torch.Tensor, ids: torch.Tensor, first: int) -> None:
        c = f.shape[0]
        pad = self.feature_window - c
        self.feat_f[i, :pad].zero_()
        self.feat_ids[i, :pad].zero_()
        self.feat_f[i, pad:].copy_(f)
        self.feat_ids[i, pad:].copy_(ids)
        self.feat_len[i] = c
        self.feat_pos[i] = int(first)

    @torch.no_grad()
    def sample(self, n: int) -> Batch:
        """n slots drawn uniformly without replacement from the filled ones. Deferred rows get their top-K first:
        outside the lock (pushes go on meanwhile), then, under it, the few pushed since, so every slot is whole."""
        with self._lock:
            pending, self._pending = self._pending, []
        tops = self._topks(pending)
        with self._lock:
            pending, self._pending = self._pending, []
            self._apply(tops + self._topks(pending))
            return self._sample(n)

    def _sample(self, n: int) -> Batch:
        if not 1 <= n <= self._size:
            raise ValueError(f"cannot sample {n} tuples from a buffer holding {self._size} "
                             f"(capacity {self.capacity}); wait until it holds at least {n}")
        ix = torch.randperm(self._size, generator=self._gen)[:n].to(self.device)
        take = lambda t: None if t is None else t.index_select(0, ix)  # noqa: E731
        z_idx, seg_len, seg_pos = take(self.z_idx), take(self.seg_len), take(self.seg_pos)
        long = lambda t: None if t is None else t.long()  # noqa: E731
        return Batch(hk=take(self.hk), token=take(self.token), reward=take(self.reward).float(),
                     pos=take(self.pos).long(), is_first_reject=take(self.is_first_reject), z_phi=take(self.z_phi),
                     z_idx=long(z_idx), z_val=take(self.z_val), kd_only=take(self.kd_only),
                     seg_h=take(self.seg_h), seg_len=long(seg_len), seg_pos=long(seg_pos), feat_f=take(self.feat_f),
                     feat_ids=long(take(self.feat_ids)), feat_len=long(take(self.feat_len)),
                     feat_pos=long(take(self.feat_pos)))

