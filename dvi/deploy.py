"""One way to load a trained drafter for deployment (no trainer): attach a LoRA drafter head shaped as the
checkpoint says (rank, scale) and load its tensors, after every check of ``dvi.checkpoint.load_ckpt``. A checkpoint
with a trained adapter loads into a model built with ``adapter_mode="train"`` and its window (``meta
["adapter_window"]``); ``load_ckpt`` refuses it otherwise, naming the flag. A checkpoint with a feature drafter
attaches one shaped as its section says (``--drafter feature`` then drafts with it).
Prune the drafter vocabulary first (``model.set_drafter_vocab``) if wanted: a full-vocabulary checkpoint loads
into a pruned head as its kept rows."""
from __future__ import annotations

from dvi.checkpoint import load_ckpt, read_ckpt
from dvi.config import LoRAConfig
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.feature_drafter import attach_feature_drafter


def deploy_drafter(model, path) -> dict:
    """Attach and load the drafter head of checkpoint ``path`` into ``model`` (and its feature drafter, when it holds
    one and ``model`` has none attached yet); returns the checkpoint's meta."""
    ck = read_ckpt(path)
    meta = ck["meta"]
    lora = LoRAConfig(r=int(meta.get("lora_r", 8)), alpha=float(meta.get("lora_alpha", 8.0)))
    attach_drafter_head(model, r=lora.r, alpha=lora.alpha)
    feature = ck.get("feature")
    if isinstance(feature, dict) and getattr(model, "feature_drafter", None) is None:
        fm = feature["meta"]
        attach_feature_drafter(model, int(fm["window"]), int(fm["lora_r"]), float(fm["lora_alpha"]))
    load_ckpt(path, model, None, None)
    return meta


def deployed_model(model_id: str, exit_layer: int, base_model, path, drafter_vocab_setup=None):
    """A ``KangarooModel`` built the way checkpoint ``path`` needs (with a trained adapter and its window when it
    holds one) and its drafter deployed. ``drafter_vocab_setup(model)`` runs before the head is attached (pruning)."""
    from kangaroo.kangaroo_model import KangarooModel

    window = read_ckpt(path)["meta"].get("adapter_window")
    model = KangarooModel(model_id=model_id, exit_layer=exit_layer, base_model=base_model,
                          adapter_mode="none" if window is None else "train", adapter_window=window)
    if drafter_vocab_setup is not None:
        drafter_vocab_setup(model)
    deploy_drafter(model, path)
    return model
