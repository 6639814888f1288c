"""The feature drafter's section of a DVI checkpoint (``dvi/checkpoint.py`` writes and reads the file):

    "feature": {"meta": {"window", "init", "lora_r", "lora_alpha", "rows"}, "tensors": {name: tensor},
                "optimizer": sd | None, "schedule": sd | None, "ema_baseline": float}   (None: no feature drafter)

The tensors are ``kangaroo.feature_drafter.feature_tensors`` (its layer, fc and LoRA A/B; never the frozen head rows
or the embedding, which are the model's). A checkpoint with a feature drafter loads into a run without one (the
self-drafter's part alone is read); a run with one refuses a checkpoint without one, or one whose window, LoRA
shape or tensors differ, in one line naming the fix. The model itself (and the pruned vocabulary the head shares
with the self-drafter's) is checked for the whole checkpoint; a full-vocabulary feature head loads into a pruned one
as its kept rows, as the self-drafter's LoRA does.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dvi.checkpoint_compat import load_optimizer_keep_hparams, optimizer_fits, tensor_problems
from kangaroo.feature_drafter import feature_tensors

CHECKED = {"window": "--feature-window", "lora_r": "--dvi-lora-r", "lora_alpha": "--dvi-lora-alpha", "rows": None}


def feature_section(fd, trainer) -> dict | None:
    """What a checkpoint keeps of the feature drafter ``fd`` (None without one) and its trainer (None: deployed)."""
    if fd is None:
        return None
    return {"meta": fd.metadata(), "tensors": {n: p.detach().cpu().clone() for n, p in feature_tensors(fd).items()},
            "optimizer": None if trainer is None else trainer.optimizer.state_dict(),
            "schedule": None if trainer is None else trainer.schedule.state_dict(),
            "ema_baseline": 0.0 if trainer is None else float(trainer.ema_baseline)}


def feature_mismatch(path: Path, ck: dict, fd, trainer=None) -> str | None:
    """One line when the checkpoint's feature drafter does not fit this run's ``fd`` (None: the run has none, and
    any section is ignored); ``trainer``: resuming, so its optimizer state must fit too."""
    if fd is None:
        return None
    saved = ck.get("feature")
    if not isinstance(saved, dict) or not isinstance(saved.get("meta"), dict):
        return (f"checkpoint {path} holds no feature drafter, but this run drafts with one (feature in --drafter): "
                "train one with --dvi-online true into another --save-lora-path, or leave feature out of --drafter")
    now, meta = fd.metadata(), saved["meta"]
    diff = [k for k in CHECKED if meta.get(k) != now[k] and not (k == "rows" and _prunes(saved, fd))]
    if diff:
        fixes = " ".join(f"{CHECKED[k]} {meta.get(k)}" for k in diff if CHECKED[k])
        show = ", ".join(f"{k}={meta.get(k)} (this run: {now[k]})" for k in diff)
        fixes = fixes or "the settings it was trained with"
        return f"checkpoint {path} holds a feature drafter with {show}: pass {fixes} to resume or deploy it"
    tensors = _fitted(saved, fd) if isinstance(saved.get("tensors"), dict) else {}
    probs = tensor_problems(feature_tensors(fd), tensors)
    if probs:
        return (f"checkpoint {path} holds feature drafter tensors that do not fit this model ({'; '.join(probs[:3])}): "
                "use a checkpoint made for this --model-id, or train a new drafter")
    if trainer is not None and (saved.get("optimizer") is None or not optimizer_fits(trainer.optimizer,
                                                                                      saved["optimizer"])):
        return (f"checkpoint {path} has no feature drafter optimizer state that fits this run: load it to deploy "
                "(--dvi-online false) or start training afresh")
    return None


def load_feature(ck: dict, fd, trainer=None) -> None:
    """Copy the checked section into ``fd`` (and, resuming, ``trainer``'s optimizer, schedule and baseline)."""
    if fd is None:
        return
    saved = ck["feature"]
    tensors = _fitted(saved, fd)
    with torch.no_grad():
        for n, p in feature_tensors(fd).items():
            p.copy_(tensors[n])
    if trainer is not None:
        load_optimizer_keep_hparams(trainer.optimizer, saved["optimizer"])
        if isinstance(saved.get("schedule"), dict):
            trainer.schedule.load_state_dict(saved["schedule"])
        trainer.ema_baseline = float(saved.get("ema_baseline") or 0.0)


def _prunes(saved: dict, fd) -> bool:
    """A full-vocabulary feature head (``rows`` = the model's vocabulary) into ``fd``'s pruned one."""
    vocab = getattr(fd, "drafter_vocab", None)
    full = fd.embed_tokens.weight.shape[0]
    return vocab is not None and saved["meta"].get("rows") == full and fd.metadata()["rows"] == len(vocab)


def _fitted(saved: dict, fd) -> dict:
    """The section's tensors, its head's LoRA B cut to ``fd``'s kept rows where it prunes a full-vocabulary head."""
    tensors = dict(saved["tensors"])
    if _prunes(saved, fd) and torch.is_tensor(tensors.get("head.B")):
        tensors["head.B"] = tensors["head.B"].index_select(0, fd.drafter_vocab.to(tensors["head.B"].device))
    return tensors
