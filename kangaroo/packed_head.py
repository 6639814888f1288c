"""The drafter head packed for the CPU kernel (``kangaroo/csrc/packed_head.cpp``): its rows in int8 (per-row scale,
VNNI) or bfloat16, one call from hk to the drafter's top-k tokens and their probabilities.

Only the drafter changes precision: the verifier's head and layers stay float32, so every committed token is still
the verifier's greedy token. A frozen head (deployed, or the identity drafter) is packed merged,
``W + s B A`` quantized once; a head that learns online keeps its base packed and adds the float32 LoRA delta of the
live A and B at every call (the trainer's published weights are seen at once).

    configure(model, precision, frozen)   the precision of ``model``'s drafter head (default: auto, live LoRA)
    packed_head(model) -> PackedHead      made on first use, again when the head is replaced (or a merged one changes)
    propose(model, hk, k) -> Proposal     the drafter's top-k columns and probabilities for hk [1, d]
    propose_sampled(model, hk, pos, params) -> Proposal   sampled: the drafter's pick at ``pos`` and its probability

``precision``: ``int8``, ``bf16``, ``float32`` (the plain head: softmax in PyTorch), or ``auto``: float32 where the
drafter head's rows are read as stored blocks (a GGUF's Q8_0 head: the engine's exact rows are faster than the int8
kernel, 0.69 vs 0.82 ms for 8192 rows in runs/record/engine/profile), else int8 where the kernel is built, else
float32. The kernel declines (float32 path) where it does not apply: no extension, hk not a few float32 CPU rows,
``--engine plain``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kangaroo import cpu_engine
from kangaroo.sampling import sample, sample_top
from kangaroo.weight_formats import BLOCK_BYTES

PRECISIONS = ("auto", "int8", "bf16", "float32")
PAD = 64  # the kernel's packed rows: d padded to a multiple of this


@dataclass
class Proposal:
    columns: list[int]   # drafter-head columns (map to token ids with model.drafter_token_id), best first
    probs: list[float]   # their probabilities under the drafter's softmax over its N columns


def _padded(w: torch.Tensor) -> torch.Tensor:
    d = w.shape[1]
    return torch.nn.functional.pad(w, (0, (-d) % PAD)).contiguous()


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: (q [N, Kp] int8, scale [N] float32, rowsum [N] int32), q = round(w / scale)."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = _padded(torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8))
    return q, scale.contiguous(), q.sum(dim=1, dtype=torch.int32)


def reference_int8_logits(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The int8 kernel's base logits by the same math in PyTorch (x [n, d]): the integer dot is exact, so equal bits."""
    x = x.float()
    amax = x.abs().amax(dim=1, keepdim=True)
    sx = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    xq = torch.round(x / sx).to(torch.int64)
    dots = xq @ q[:, :x.shape[1]].to(torch.int64).T
    return dots.float() * (sx * scale[None])


class PackedHead:
    """One drafter head's rows in the kernel's format, with the LoRA tensors to add (live) or merged in."""

    def __init__(self, weight: torch.Tensor, precision: str, lora=None, key=()):
        """``weight`` [N, d] float; ``lora`` (A, B, scaling) read at every call, or None; ``key``: what the pack was
        made from (``_key``), so that a replaced or changed head is packed again."""
        self.precision, self.lora, self.key = precision, lora, key
        if precision == "int8":
            self.q, self.scale, self.rowsum = quantize_rows(weight)
        elif precision == "bf16":
            self.q = _padded(weight.detach().to(torch.bfloat16))
        else:
            raise ValueError(f"cannot pack a drafter head as {precision!r}: use int8 or bf16")
        self.rows = weight.shape[0]

    def top_k(self, hk: torch.Tensor, k: int = 1, isa: int = 0):
        """(columns [n, k], probs [n, k], logits [n, N]) for hk [n, d] float32; ``isa`` 1 forces the AVX2 path."""
        ext = cpu_engine.extension()
        x = hk.reshape(-1, hk.shape[-1]).float().contiguous()
        A, B, s = (None, None, 0.0) if self.lora is None else (self.lora[0].detach(), self.lora[1].detach(),
                                                                 self.lora[2])
        if self.precision == "int8":
            return ext.head_int8(x, self.q, self.scale, self.rowsum, A, B, s, k, isa)
        return ext.head_bf16(x, self.q, A, B, s, k, isa)


def resolve_precision(precision: str, model=None) -> str:
    """``auto``: float32 where ``model``'s drafter head is read as stored blocks, else int8 where the kernel is built
    (AVX2 at least), else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown drafter head precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "int8" if cpu_engine.extension() is not None and not _reads_blocks(model) else "float32"


def _reads_blocks(model) -> bool:
    """Whether the base rows of ``model``'s drafter head are stored in a block format (q8_0, q4_0, q4_1)."""
    head = getattr(model, "drafter_head", None)
    stored = cpu_engine.stored_of(head.proj.base) if head is not None else None
    return stored is not None and stored.fmt in BLOCK_BYTES


def configure(model, precision: str = "auto", frozen: bool = False) -> None:
    """Choose the precision of ``model``'s drafter head (packed on first use); ``frozen``: its LoRA tensors do not
    change any more (deployed), so they are merged into the packed rows."""
    precision, frozen = resolve_precision(precision, model), bool(frozen)
    if getattr(model, "head_precision", None) != precision or getattr(model, "head_frozen", None) != frozen:
        model.packed_head = None  # the same settings again (a server's drafter per request) keep the pack
    model.head_precision, model.head_frozen = precision, frozen


def _key(model) -> tuple:
    """What a pack depends on: the head object (and, merged, its LoRA tensors' versions) or the identity rows."""
    head = model.drafter_head
    if head is None:
        return ("identity", model.identity_head_weight)
    if getattr(model, "head_frozen", False):
        return ("merged", head, head.proj.A._version, head.proj.B._version)
    return ("live", head)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y or (isinstance(x, int) and x == y) for x, y in zip(a, b))


def packed_head(model) -> PackedHead | None:
    """The pack of ``model``'s drafter head as it is now (made on first use, again when the head was replaced or a
    merged one changed); None for the float32 head, or where the kernel is not built."""
    precision = resolve_precision(getattr(model, "head_precision", "auto"), model)
    if precision == "float32" or model.device.type != "cpu" or cpu_engine.extension() is None:
        return None
    key, packed = _key(model), getattr(model, "packed_head", None)
    if packed is not None and packed.precision == precision and _same(packed.key, key):
        return packed
    if key[0] == "identity":
        packed = PackedHead(key[1], precision, key=key)
    elif key[0] == "merged":
        p = model.drafter_head.proj
        with torch.no_grad():
            packed = PackedHead(p.base.weight.float() + (p.B @ p.A) * p.scaling, precision, key=key)
    else:
        p = model.drafter_head.proj
        packed = PackedHead(p.base.weight, precision, lora=(p.A, p.B, p.scaling), key=key)
    model.packed_head = packed
    return packed


@torch.no_grad()
def propose(model, hk: torch.Tensor, k: int = 1) -> Proposal:
    """The drafter's top-k for one hk [1, d]: the packed kernel where it applies, else the float32 head."""
    packed = packed_head(model) if cpu_engine.applies(hk) else None
    if packed is not None:
        idx, prob, _ = packed.top_k(hk, k)
        return Proposal(idx[0].tolist(), prob[0].tolist())
    probs = torch.softmax(model.drafter_logits_from_hk(hk).float().reshape(-1), dim=-1)
    p, idx = probs.topk(k) if k > 1 else probs.max(dim=-1, keepdim=True)
    return Proposal(idx.tolist(), p.tolist())


@torch.no_grad()
def propose_sampled(model, hk: torch.Tensor, pos: int, params, k: int = 1) -> Proposal:
    """Sampled (``kangaroo/sampling.py``): the drafter's pick for one hk [1, d] at position ``pos``, the argmax of
    its tempered, truncated logits plus the noise of each column's full-vocabulary id, with that pick's probability
    under the same distribution (``k`` > 1: then its next best columns, ``sample_top``, a tree's branches). The
    logits come from the packed kernel where it applies (its top-k is not used), else from the float32 head."""
    packed = packed_head(model) if cpu_engine.applies(hk) else None
    logits = packed.top_k(hk, 1)[2][0] if packed is not None else model.drafter_logits_from_hk(hk).reshape(-1)
    if k > 1:
        return Proposal(*sample_top(logits, pos, params, ids=model.drafter_vocab, k=k))
    col, prob = sample(logits, pos, params, ids=model.drafter_vocab, prob=True)
    return Proposal([col], [prob])
