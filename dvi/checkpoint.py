"""DVI checkpoints: what they hold of a drafter, and saving and loading them. Never the base weights.

``lora`` holds the drafter head's named trainable tensors (``DrafterHead.named_trainable``: ``A``, ``B``) and
``meta["drafter"]`` its metadata. With a trained adapter (``--adapter-mode train``) ``adapter`` holds its tensors
by name (``kangaroo.trained_adapter.adapter_tensors``) and ``meta["adapter_window"]`` its window; otherwise (and in
files written before) both are None/absent. ``feature`` holds a feature drafter's section
(``dvi/checkpoint_feature.py``; None/absent without one). The drafter side is read through ``SavedDrafter`` (the
trainer's ``TrainableDrafter`` protocol and what names the model); the file itself is ``dvi/checkpoint_file.py``,
whether a checkpoint fits this run ``dvi/checkpoint_compat.py``.

Loads validate everything (file, format, meta, tensor names and shapes, optimizer layout) before anything in the
model or optimizer changes. On resume the optimizer state (moments, step) is restored but this run's
hyper-parameters (``--dvi-lr``) are kept, as for the schedule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol

import torch
from torch import nn

from dvi.checkpoint_compat import (adapter_mismatch, fit_lora_to_drafter_vocab, head_sample,
                                   load_optimizer_keep_hparams, meta_mismatch, optimizer_fits, tensor_problems)
from dvi.checkpoint_feature import feature_mismatch, feature_section, load_feature
from dvi.checkpoint_file import (FORMAT, VERSION, CheckpointError, check_plain, check_writable_dir, checkpoint_path,
                                 latest_checkpoint, read_ckpt, write_ckpt)
from kangaroo.drafter_head import TrainableDrafter
from kangaroo.trained_adapter import adapter_tensors

__all__ = ["CheckpointError", "SavedDrafter", "adapter_state_dict", "check_writable_dir", "checkpoint_meta",
           "checkpoint_path", "latest_checkpoint", "load_ckpt", "load_lora_state_dict", "lora_state_dict",
           "read_ckpt", "save_ckpt"]


class SavedDrafter(TrainableDrafter, Protocol):
    """What a checkpoint reads of a model: the trained parts, and what recognises the model they fit."""

    model_id: str
    exit_layer: int
    config: Any                          # the base model's config (hidden_size, vocab_size, num_hidden_layers)
    head_model: Optional[nn.Linear]      # the verifier's head; None for a bare drafter (its head's base copy)


def _lora_params(model: SavedDrafter) -> dict:
    return {} if model.drafter_head is None else model.drafter_head.named_trainable()


def _cpu_copies(tensors: dict) -> dict:
    return {n: p.detach().cpu().clone() for n, p in tensors.items()}


def lora_state_dict(model: SavedDrafter) -> dict:
    return _cpu_copies(_lora_params(model))


def adapter_state_dict(model: SavedDrafter) -> dict | None:
    """The trained adapter's tensors (None without one)."""
    return None if model.trained_adapter is None else _cpu_copies(adapter_tensors(model.trained_adapter))


def load_lora_state_dict(model: SavedDrafter, sd: dict) -> None:
    """Copy ``sd`` into the model's LoRA tensors in place (optimizers keep pointing at the same tensors)."""
    probs = tensor_problems(_lora_params(model), sd)
    if probs:
        raise CheckpointError("LoRA tensors do not fit this drafter head (" + "; ".join(probs)
                              + "): use a checkpoint made with the same model, --exitlayer and --dvi-lora-r")
    with torch.no_grad():
        for n, p in _lora_params(model).items():
            p.copy_(sd[n])


def _drafter_vocab(model: SavedDrafter):
    v = model.drafter_vocab
    return None if v is None else v.detach().cpu().clone()


def checkpoint_meta(model: SavedDrafter) -> dict:
    head, cfg = model.drafter_head, model.config
    if head is None:
        raise CheckpointError("the model has no drafter head, so there is nothing to save or load: "
                              "attach one first (kangaroo.drafter_head.attach_drafter_head)")
    drafter = head.metadata()
    verifier = model.head_model.weight if model.head_model is not None else head.base_weight
    adapter = model.trained_adapter
    return {"format": FORMAT, "version": VERSION, "model_id": str(model.model_id), "exit_layer": int(model.exit_layer),
            "hidden_size": int(cfg.hidden_size), "vocab_size": int(cfg.vocab_size),
            "num_hidden_layers": int(cfg.num_hidden_layers), "lora_r": drafter["lora_r"],
            "lora_alpha": drafter["lora_alpha"], "head_sample": head_sample(verifier),
            "drafter_vocab": _drafter_vocab(model), "drafter": drafter,
            "adapter_window": None if adapter is None else int(adapter.window)}


def save_ckpt(path, model: SavedDrafter, opt, sched, ema_b, *, global_step: int | None = None,
              extra: dict | None = None, feature_trainer=None) -> None:
    """``feature_trainer``: the feature drafter's trainer, whose optimizer state is saved with its tensors."""
    extra = dict(extra or {})
    check_plain(extra, "extra")
    obj = {"format": FORMAT, "version": VERSION, "meta": checkpoint_meta(model), "lora": lora_state_dict(model),
           "adapter": adapter_state_dict(model),
           "feature": feature_section(getattr(model, "feature_drafter", None), feature_trainer),
           "optimizer": None if opt is None else opt.state_dict(),
           "schedule": None if sched is None else sched.state_dict(), "ema_baseline": float(ema_b),
           "global_step": None if global_step is None else int(global_step), "extra": extra}
    write_ckpt(path, obj)


def _check_fits(path: Path, ck: dict, model: SavedDrafter, opt, sched, feature_trainer=None) -> dict:
    """Every check of ``load_ckpt``, before anything changes; returns the LoRA tensors to load."""
    msg = (meta_mismatch(path, ck["meta"], checkpoint_meta(model)) or adapter_mismatch(path, ck, model.trained_adapter)
           or feature_mismatch(path, ck, getattr(model, "feature_drafter", None), feature_trainer))
    if msg:
        raise CheckpointError(msg)
    lora = fit_lora_to_drafter_vocab(path, _drafter_vocab(model), ck, model.config.vocab_size)
    probs = tensor_problems(_lora_params(model), lora)
    if probs:
        raise CheckpointError(f"checkpoint {path} does not fit this drafter head ({'; '.join(probs)}): "
                              "use a checkpoint made for this model, or train a new drafter")
    for name, obj, state in (("optimizer", opt, ck["optimizer"]), ("schedule", sched, ck["schedule"])):
        if obj is not None and state is None:
            raise CheckpointError(f"checkpoint {path} holds no {name} state, so training cannot resume from it: "
                                  "load it to deploy (--dvi-online false) or start training afresh")
    if opt is not None and not optimizer_fits(opt, ck["optimizer"]):
        raise CheckpointError(f"checkpoint {path} has optimizer state that does not fit this run's LoRA tensors: "
                              "load it to deploy (--dvi-online false) or start training afresh")
    if sched is not None and (not isinstance(ck["schedule"], dict) or "step" not in ck["schedule"]):
        raise CheckpointError(f"checkpoint {path} has no valid schedule state (a dict with its step): "
                              "use another checkpoint, or load it to deploy (--dvi-online false)")
    return lora


def load_ckpt(path, model: SavedDrafter, opt, sched, feature_trainer=None) -> float:
    """Load LoRA tensors (and, unless None, the optimizer and schedule state); return the EMA baseline.
    ``opt=None, sched=None`` is deploy mode. Nothing is modified unless every check passes. A model with a feature
    drafter loads its section too (``dvi/checkpoint_feature.py``; ``feature_trainer``: resuming, its state)."""
    path = Path(path)
    ck = read_ckpt(path)
    load_lora_state_dict(model, _check_fits(path, ck, model, opt, sched, feature_trainer))
    load_feature(ck, getattr(model, "feature_drafter", None), feature_trainer)
    if ck["meta"].get("adapter_window") is not None:
        with torch.no_grad():
            for n, p in adapter_tensors(model.trained_adapter).items():
                p.copy_(ck["adapter"][n])
    if opt is not None:
        load_optimizer_keep_hparams(opt, ck["optimizer"])
    if sched is not None:
        sched.load_state_dict(ck["schedule"])
    return float(ck["ema_baseline"])
