"""One way to load a trained drafter for deployment (no trainer): attach a LoRA drafter head shaped as the
checkpoint says (rank, scale) and load its tensors, after every check of ``dvi.checkpoint.load_ckpt``. A checkpoint
with a trained adapter loads into a model built with ``adapter_mode="train"`` and its window (``meta
["adapter_window"]``); ``load_ckpt`` refuses it otherwise, naming the flag.
Prune the drafter vocabulary first (``model.set_drafter_vocab``) if wanted: a full-vocabulary checkpoint loads
into a pruned head as its kept rows."""
from __future__ import annotations

from dvi.checkpoint import load_ckpt, read_ckpt
from kangaroo.drafter_head import attach_drafter_head


def deploy_drafter(model, path) -> dict:
    """Attach and load the drafter head of checkpoint ``path`` into ``model``; returns the checkpoint's meta."""
    meta = read_ckpt(path)["meta"]
    attach_drafter_head(model, r=int(meta.get("lora_r", 8)), alpha=float(meta.get("lora_alpha", 8.0)))
    load_ckpt(path, model, None, None)
    return meta
