"""A fixed-size ring buffer of DVI training tuples, preallocated at construction.

Per slot: hk [d] fp16, token int64, reward int8, pos int32, is_first_reject bool, kd_only bool, and the verifier's
logits:
``store="full"`` keeps z_phi [V]; ``store="topk"`` keeps only its top-K (indices int32, values). The top-K path
never builds a dense [*, V] tensor beyond the z_phi handed to ``push``.

Thread-safe: pushes (decode thread) and samples (trainer thread) take one lock, so a sample never sees a
half-written slot.
"""
from __future__ import annotations

import threading

import torch

from dvi.config import LOGITS_DTYPES, BufferConfig
from dvi.types import Batch, DVIConfigError, DVITrainSample

STORES = ("full", "topk")


class DVIRingBuffer:
    """``push(sample)`` one tuple, ``sample(n) -> Batch``; the storage layout below is this class's own."""

    def __init__(self, cfg: BufferConfig, d_model: int, vocab_size: int, device: str = "cpu"):
        check_buffer_config(cfg, d_model, vocab_size)
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
        self._next = 0   # slot the next push writes (the oldest one once full)
        self._size = 0
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def _storages(self) -> list[torch.Tensor]:
        return [t for t in (self.hk, self.token, self.reward, self.pos, self.is_first_reject, self.kd_only,
                            self.z_phi, self.z_idx, self.z_val) if t is not None]

    def bytes_per_slot(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self._storages())

    def _check(self, s: DVITrainSample) -> None:
        if tuple(s.hk.shape) != (self.d_model,):
            raise ValueError(f"hk must have shape [{self.d_model}], got {tuple(s.hk.shape)}")
        if tuple(s.z_phi.shape) != (self.vocab_size,):
            raise ValueError(f"z_phi must have shape [{self.vocab_size}], got {tuple(s.z_phi.shape)}")
        if not 0 <= int(s.token) < self.vocab_size:
            raise ValueError(f"token {int(s.token)} is outside the vocabulary 0..{self.vocab_size - 1}")

    @torch.no_grad()
    def push(self, s: DVITrainSample) -> None:
        """Write one tuple into the next slot (the oldest once full); top-K stores only topk(z_phi, K)."""
        self._check(s)
        top = torch.topk(s.z_phi, self.topk) if self.store == "topk" else None  # z_phi never cast or copied whole
        with self._lock:
            i = self._next
            self.hk[i].copy_(s.hk)
            self.token[i] = int(s.token)
            self.reward[i] = int(s.reward)
            self.pos[i] = int(s.pos)
            self.is_first_reject[i] = bool(s.is_first_reject)
            self.kd_only[i] = bool(s.kd_only)
            if top is None:
                self.z_phi[i].copy_(s.z_phi)
            else:
                self.z_val[i].copy_(top.values)
                self.z_idx[i].copy_(top.indices)
            self._next = (i + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)

    @torch.no_grad()
    def sample(self, n: int) -> Batch:
        """n slots drawn uniformly without replacement from the filled ones."""
        with self._lock:
            return self._sample(n)

    def _sample(self, n: int) -> Batch:
        if not 1 <= n <= self._size:
            raise ValueError(f"cannot sample {n} tuples from a buffer holding {self._size} "
                             f"(capacity {self.capacity}); wait until it holds at least {n}")
        ix = torch.randperm(self._size, generator=self._gen)[:n].to(self.device)
        take = lambda t: None if t is None else t.index_select(0, ix)  # noqa: E731
        z_idx = take(self.z_idx)
        return Batch(hk=take(self.hk), token=take(self.token), reward=take(self.reward).float(),
                     pos=take(self.pos).long(), is_first_reject=take(self.is_first_reject), z_phi=take(self.z_phi),
                     z_idx=None if z_idx is None else z_idx.long(), z_val=take(self.z_val),
                     kd_only=take(self.kd_only))


def check_buffer_config(cfg: BufferConfig, d_model: int, vocab_size: int) -> None:
    if cfg.store not in STORES:
        raise DVIConfigError(f"--dvi-store must be one of {STORES}, got {cfg.store!r}")
    if cfg.capacity < 1:
        raise DVIConfigError(f"--dvi-buffer-size must be >= 1, got {cfg.capacity}; pass a positive slot count")
    if cfg.store == "topk" and not 1 <= cfg.topk <= vocab_size:
        raise DVIConfigError(f"--dvi-topk must be in 1..{vocab_size} (the vocabulary size), got {cfg.topk}; "
                             f"pick a smaller K or use --dvi-store full")
    if d_model < 1 or vocab_size < 1:
        raise DVIConfigError(f"d_model and vocab_size must be >= 1, got {d_model}, {vocab_size}")
    if cfg.logits_dtype not in LOGITS_DTYPES:
        raise DVIConfigError(f"--dvi-logits-dtype must be one of {', '.join(LOGITS_DTYPES)}, got {cfg.logits_dtype!r}")
