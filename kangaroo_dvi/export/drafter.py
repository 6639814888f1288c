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
    """The deployed drafter of checkpoint ``ckpt`` on ``model_id`` (default: the one it was trained on), built as
    every entry point builds a session (``kangaroo_dvi.session.build_session``) at the checkpoint's exit layer and
    with exactly its drafter vocabulary."""
    from dvi.deploy import read_deployment
    from kangaroo.drafter_config import AUTO_VOCAB, DrafterConfig
    from kangaroo_dvi.session import NO_DRAFTER, build_session
    from kangaroo_dvi.session_config import SessionConfig

    saved = read_deployment(ckpt)
    model_id = model_id or saved.model_id
    if not model_id:
        raise UserError(f"checkpoint {ckpt} does not name its model: pass --model-id")
    session_cfg = SessionConfig(model_id=model_id, device=device, dtype="float32", seed=None,
                                drafter_checkpoint=str(ckpt))
    vocab = AUTO_VOCAB if saved.drafter_vocab is not None else 0  # its pruned ids, or the full vocabulary
    drafter_cfg = DrafterConfig(model_id=model_id, exit_layer=saved.exit_layer, drafter_vocab=vocab)
    return build_session(session_cfg, drafter_cfg, base_model=base_model, drafting=NO_DRAFTER,
                         print_fn=lambda *_: None).model


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
