"""The DVI drafter head: a separate copy of the verifier's LM head plus a LoRA delta (the only trained tensors).

    logits = x W^T (frozen copy) + ((x A^T) B^T) * alpha / r      (A [r, d], B [V, r], float32)

B starts at zero, so at init the drafter head reproduces the verifier's head exactly. The forward is merge-free:
W is never modified, the delta is always computed on the side, in float32.

``TrainableDrafter`` is the contract between a drafter and DVI's trainer side (trainer, shadow, checkpoints): the
four parts they read, by name, on a ``KangarooModel`` or on a trainer's ``ShadowDrafter``.
"""
from __future__ import annotations

import math
from typing import Optional, Protocol

import torch
from torch import nn

from kangaroo import cpu_engine
from kangaroo.adapter import KangarooAdapter
from kangaroo.trained_adapter import adapter_tensors


class TrainableDrafter(Protocol):
    """What DVI trains and reads of a drafter."""

    drafter_head: Optional["DrafterHead"]         # the LoRA head (None until ``attach_drafter_head``)
    trained_adapter: Optional[KangarooAdapter]    # the adapter DVI trains (``--adapter-mode train``), else None
    rotary_emb: Optional[nn.Module]               # the model's rotary embedding, which a trained adapter runs with
    drafter_vocab: Optional[torch.Tensor]         # [N] ids of a pruned drafter head: column i drafts id
                                                  # drafter_vocab[i] (the vocabulary map); None: all V ids


class LoRALinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, r: int = 8, alpha: float = 8.0, bias: bool = False,
                 device=None, dtype=None):
        super().__init__()  # r >= 1 and alpha > 0: checked by their config (dvi.config.LoRAConfig)
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.base = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.base.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=torch.float32))
        self.B = nn.Parameter(torch.empty(out_features, r, device=device, dtype=torch.float32))
        self.reset_lora_parameters()

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        nn.init.zeros_(self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_base = x.to(self.base.weight.dtype)
        if self.base.bias is None and not x.requires_grad and cpu_engine.applies(x_base):
            base = cpu_engine.linear(x_base, self.base.weight)  # the frozen base on the lean engine (decode)
        else:
            base = self.base(x_base).float()
        return base + ((x.float() @ self.A.T) @ self.B.T) * self.scaling

    def trainable_params(self) -> list[nn.Parameter]:
        return [self.A, self.B]


class DrafterHead(nn.Module):
    def __init__(self, in_f: int, vocab_size: int, r: int = 8, alpha: float = 8.0, device=None, dtype=None):
        super().__init__()
        self.proj = LoRALinear(in_f, vocab_size, r, alpha, bias=False, device=device, dtype=dtype)

    def forward(self, hk: torch.Tensor) -> torch.Tensor:
        """hk [..., d] (any float dtype) -> logits [..., V] float32."""
        return self.proj(hk)

    def trainable_params(self) -> list[nn.Parameter]:
        return self.proj.trainable_params()

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """The trained tensors by name: what a checkpoint stores (``A`` [r, d], ``B`` [N, r])."""
        return {"A": self.proj.A, "B": self.proj.B}

    def metadata(self) -> dict:
        return {"lora_r": int(self.proj.r), "lora_alpha": float(self.proj.alpha), "rows": int(self.proj.out_features)}

    @property
    def weight_device(self) -> torch.device:
        return self.proj.base.weight.device

    @property
    def weight_dtype(self) -> torch.dtype:
        """The frozen base projection's dtype (the trainer feeds hk in it)."""
        return self.proj.base.weight.dtype

    @property
    def base_weight(self) -> torch.Tensor:
        """The frozen copy of the verifier's head rows (read-only)."""
        return self.proj.base.weight

    def shadow(self) -> "DrafterHead":
        """A head sharing this one's frozen base projection (read-only) with its own copy of A and B: what a
        trainer on another thread updates while this head keeps drafting."""
        p = self.proj
        out = DrafterHead(p.in_features, p.out_features, p.r, p.alpha, device="meta")
        out.proj.base = p.base
        out.proj.A = nn.Parameter(p.A.detach().clone())
        out.proj.B = nn.Parameter(p.B.detach().clone())
        return out

    @classmethod
    def from_verifier_head(cls, head: nn.Linear, r: int = 8, alpha: float = 8.0, rows=None) -> "DrafterHead":
        """A copy of ``head`` with its own storage (the LM head is often tied to the input embedding).
        ``rows`` ([N] token ids, FR-Spec) keeps only those rows: a pruned sub-head whose LoRA B is [N, r]."""
        w = head.weight.detach()
        bias = None if head.bias is None else head.bias.detach()
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.long, device=w.device)
            w = w[rows]
            bias = None if bias is None else bias[rows]
        # Built on "meta" then materialised: no throw-away random init of a [V, d] matrix.
        out = nn.utils.skip_init(cls, w.shape[1], w.shape[0], r=r, alpha=alpha, device=w.device, dtype=w.dtype)
        proj = out.proj
        if bias is not None:
            proj.base.bias = nn.Parameter(bias.clone(), requires_grad=False)
        with torch.no_grad():
            proj.base.weight.copy_(w)
        proj.base.requires_grad_(False)
        proj.reset_lora_parameters()
        return out


def attach_drafter_head(model, *, r: int = 8, alpha: float = 8.0) -> DrafterHead:
    """Give ``model`` (a ``KangarooModel``) a LoRA drafter head: a separate copy of its verifier head (never
    sharing storage), restricted to ``model.drafter_vocab`` when the drafter vocabulary is pruned. Replaces any
    head attached before. Returns the head."""
    model.drafter_head = DrafterHead.from_verifier_head(model.head_model, r=r, alpha=alpha, rows=model.drafter_vocab)
    return model.drafter_head


def trainable_params(drafter: TrainableDrafter) -> list[nn.Parameter]:
    """What DVI may train on a drafter (a model, or a trainer's shadow of it), in a fixed order: its drafter head's
    LoRA tensors (none without a head), then the trained adapter's tensors (``--adapter-mode train``)."""
    head = drafter.drafter_head
    lora = [] if head is None else head.trainable_params()
    return lora + list(adapter_tensors(drafter.trained_adapter).values())
