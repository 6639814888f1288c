"""A trained-looking drafter checkpoint on a tiny model: a LoRA head whose B is random (so it differs from the
verifier's head), optionally a trained adapter with a non-zero o_proj and a pruned drafter vocabulary."""
import torch

from dvi.checkpoint import save_ckpt
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.kangaroo_model import KangarooModel


def drafter_checkpoint(lm, path, *, window=None, vocab=None, seed=0, model_id="tiny"):
    km = KangarooModel(model_id=model_id, base_model=lm, exit_layer=2, adapter_mode="none" if window is None
                       else "train", adapter_window=window)
    if vocab is not None:
        km.set_drafter_vocab(vocab)
    head = attach_drafter_head(km, r=4, alpha=8.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.proj.B.copy_(torch.randn(head.proj.B.shape, generator=g) * 0.5)
        if window is not None:
            o = km.trained_adapter.self_attn.o_proj.weight
            o.copy_(torch.randn(o.shape, generator=g).to(o.dtype) * 0.3)
    save_ckpt(path, km, None, None, 0.0)
    return path
