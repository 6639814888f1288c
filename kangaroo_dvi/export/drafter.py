"""A trained drafter, read from its DVI checkpoint, as the plain tensors the export formats hold.

    load_drafter(ckpt)      -> KangarooModel with the checkpoint's drafter deployed (LoRA head, trained adapter,
                               pruned vocabulary), the model the checkpoint names unless one is given
    full_lora_b(model)      -> B [V, r]: a pruned head's rows scattered back to the full vocabulary (zeros elsewhere)
    merged_head(model)      -> W + (alpha / r) B A, [V, d] float32; rows outside a pruned vocabulary are zero

Rows outside a pruned drafter vocabulary: the project's drafter cannot draft those tokens. A zero row scores 0 for
every input, so such a token wins the argmax only where every kept token scores below 0 (docs/scale.md, "Exports").
"""
from __future__ import annotations

import torch

from common.errors import UserError


def load_drafter(ckpt, model_id: str | None = None, base_model=None, device: str = "cpu"):
    """The deployed drafter of checkpoint ``ckpt`` on ``model_id`` (default: the one it was trained on)."""
    from dvi.checkpoint import read_ckpt
    from dvi.deploy import deployed_model
    from kangaroo.model_loading import load_causal_lm

    meta = read_ckpt(ckpt)["meta"]
    model_id = model_id or meta.get("model_id")
    if not model_id:
        raise UserError(f"checkpoint {ckpt} does not name its model: pass --model-id")
    if base_model is None:
        base_model = load_causal_lm(model_id, device=device, dtype="float32")
    vocab = meta.get("drafter_vocab")
    prune = None if vocab is None else (lambda km: km.set_drafter_vocab(vocab))
    return deployed_model(model_id, int(meta["exit_layer"]), base_model, ckpt, prune)


def _scatter_rows(model, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` [N, c] of the drafter's vocabulary as [V, c], zeros outside it (the rows themselves for a full head)."""
    if model.drafter_vocab is None:
        return rows
    full = rows.new_zeros(model.config.vocab_size, rows.shape[1])
    full[model.drafter_vocab.to(rows.device)] = rows
    return full


@torch.no_grad()
def full_lora_b(model) -> torch.Tensor:
    """The LoRA B of the drafter head over the full vocabulary, [V, r] float32."""
    return _scatter_rows(model, model.drafter_head.proj.B.detach().float().cpu())


@torch.no_grad()
def merged_head(model) -> torch.Tensor:
    """The drafter head with its LoRA merged, W + (alpha / r) B A, over the full vocabulary, [V, d] float32."""
    p = model.drafter_head.proj
    rows = p.base.weight.detach().float().cpu() + (p.B.detach().float().cpu() @ p.A.detach().float().cpu()) * p.scaling
    return _scatter_rows(model, rows)


def export_meta(model, ckpt) -> dict:
    """What a consumer of an export needs to know that the format cannot say."""
    adapter = model.trained_adapter
    vocab = model.drafter_vocab
    return {"format": "kangaroo-dvi-export", "version": 1, "checkpoint": str(ckpt), "model_id": str(model.model_id),
            "exit_layer": int(model.exit_layer), "adapter_window": None if adapter is None else int(adapter.window),
            "drafter_vocab": None if vocab is None else [int(i) for i in vocab.tolist()]}
