"""A fixed-size ring buffer of DVI training tuples, preallocated at construction.

Per slot: hk [d] fp16, token int64, reward int8, pos int32, is_first_reject bool, and the verifier's logits:
``store="full"`` keeps z_phi [V]; ``store="topk"`` keeps only its top-K (indices int32, values). The top-K path
never builds a dense [*, V] tensor beyond the z_phi handed to ``push_topk``.

Thread-safe: pushes (decode thread) and samples (trainer thread) take one lock, so a sample never sees a
half-written slot.
"""
from __future__ import annotations

import threading

import torch

from dvi.types import DVIConfigError

STORES = ("full", "topk")


class DVIRingBuffer:
    def __init__(self, capacity: int, d_model: int, vocab_size: int, store: str, topk: int,
                 logits_dtype: torch.dtype, device: str = "cpu", seed: int = 0):
        if store not in STORES:
            raise DVIConfigError(f"--dvi-store must be one of {STORES}, got {store!r}")
        if capacity < 1:
            raise DVIConfigError(f"--dvi-buffer-size must be >= 1, got {capacity}; pass a positive slot count")
        if store == "topk" and not 1 <= topk <= vocab_size:
            raise DVIConfigError(f"--dvi-topk must be in 1..{vocab_size} (the vocabulary size), got {topk}; "
                                 f"pick a smaller K or use --dvi-store full")
        if d_model < 1 or vocab_size < 1:
            raise DVIConfigError(f"d_model and vocab_size must be >= 1, got {d_model}, {vocab_size}")
        if not logits_dtype.is_floating_point:
            raise DVIConfigError(f"logits dtype must be a float dtype, got {logits_dtype}")
        self.capacity, self.d_model, self.vocab_size, self.store = capacity, d_model, vocab_size, store
        self.topk = topk if store == "topk" else None
        self.device = torch.device(device)
        kw = dict(device=self.device)
        self.hk = torch.zeros(capacity, d_model, dtype=torch.float16, **kw)
        self.token = torch.zeros(capacity, dtype=torch.int64, **kw)
        self.reward = torch.zeros(capacity, dtype=torch.int8, **kw)
        self.pos = torch.zeros(capacity, dtype=torch.int32, **kw)
        self.is_first_reject = torch.zeros(capacity, dtype=torch.bool, **kw)
        self.z_phi = self.z_idx = self.z_val = None
        if store == "full":
            self.z_phi = torch.zeros(capacity, vocab_size, dtype=logits_dtype, **kw)
        else:
            self.z_idx = torch.zeros(capacity, topk, dtype=torch.int32, **kw)
            self.z_val = torch.zeros(capacity, topk, dtype=logits_dtype, **kw)
        self._next = 0   # slot the next push writes (the oldest one once full)
        self._size = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def _storages(self) -> list[torch.Tensor]:
        return [t for t in (self.hk, self.token, self.reward, self.pos, self.is_first_reject,
                            self.z_phi, self.z_idx, self.z_val) if t is not None]

    def bytes_per_slot(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self._storages())

    def _check(self, mode: str, hk: torch.Tensor, token: int, z_phi: torch.Tensor) -> None:
        if mode != self.store:
            raise ValueError(f"push_{mode} on a buffer built with --dvi-store {self.store}; "
                             f"call push_{self.store} instead")
        if tuple(hk.shape) != (self.d_model,):
            raise ValueError(f"hk must have shape [{self.d_model}], got {tuple(hk.shape)}")
        if tuple(z_phi.shape) != (self.vocab_size,):
            raise ValueError(f"z_phi must have shape [{self.vocab_size}], got {tuple(z_phi.shape)}")
        if not 0 <= int(token) < self.vocab_size:
            raise ValueError(f"token {int(token)} is outside the vocabulary 0..{self.vocab_size - 1}")

    @torch.no_grad()
    def _push_common(self, hk, token, reward, pos, is_first_reject) -> int:
        i = self._next
        self.hk[i].copy_(hk)
        self.token[i] = int(token)
        self.reward[i] = int(reward)
        self.pos[i] = int(pos)
        self.is_first_reject[i] = bool(is_first_reject)
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        return i

    @torch.no_grad()
    def push_full(self, hk, token, z_phi, reward, pos, is_first_reject) -> None:
        self._check("full", hk, token, z_phi)
        with self._lock:
            i = self._push_common(hk, token, reward, pos, is_first_reject)
            self.z_phi[i].copy_(z_phi)

    @torch.no_grad()
    def push_topk(self, hk, token, z_phi, reward, pos, is_first_reject) -> None:
        self._check("topk", hk, token, z_phi)
        val, idx = torch.topk(z_phi, self.topk)  # [K] each; z_phi is never cast or copied whole
        with self._lock:
            i = self._push_common(hk, token, reward, pos, is_first_reject)
            self.z_idx[i].copy_(idx)
            self.z_val[i].copy_(val)

    @torch.no_grad()
    def sample(self, n: int) -> dict:
        """n slots drawn uniformly without replacement from the filled ones."""
        with self._lock:
            return self._sample(n)

    def _sample(self, n: int) -> dict:
        if not 1 <= n <= self._size:
            raise ValueError(f"cannot sample {n} tuples from a buffer holding {self._size} "
                             f"(capacity {self.capacity}); wait until it holds at least {n}")
        ix = torch.randperm(self._size, generator=self._gen)[:n].to(self.device)
        take = lambda t: None if t is None else t.index_select(0, ix)  # noqa: E731
        z_idx = take(self.z_idx)
        return {
            "hk": take(self.hk),
            "token": take(self.token),
            "reward": take(self.reward).float(),
            "pos": take(self.pos).long(),
            "is_first_reject": take(self.is_first_reject),
            "z_phi": take(self.z_phi),
            "z_idx": None if z_idx is None else z_idx.long(),
            "z_val": take(self.z_val),
        }
