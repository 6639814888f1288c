"""The DVI checkpoint file: its format and version, reading it safely, writing it atomically, finding the newest.

    {"format": "kangaroo-dvi-lora", "version": 2, "meta": {...}, "lora": {name: tensor}, "adapter": {...} | None,
     "feature": {...} | None, "optimizer": sd | None, "schedule": sd | None, "ema_baseline": float,
     "global_step": int | None, "extra": dict}

Writes go through ``common.atomic.atomic_write`` (temp file in the same folder, fsync, os.replace): a crash mid-save
leaves the previous file under that name intact. Reads use ``weights_only=True`` (a checkpoint cannot run code) and
check the file, its format, version and keys before anyone looks inside. Version 1 files named the LoRA tensors by
attribute path (``drafter_head.proj.A``); ``read_ckpt`` gives them the head's own names (``LEGACY_NAMES``).
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from common.atomic import atomic_write
from common.errors import UserError

FORMAT, VERSION = "kangaroo-dvi-lora", 2
READS = (1, 2)
LEGACY_NAMES = {"drafter_head.proj.A": "A", "drafter_head.proj.B": "B"}  # version 1 -> the head's own names
PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or made for another model/drafter."""


def checkpoint_path(dir, global_step: int | None = None) -> Path:
    return Path(dir) / ("final.pt" if global_step is None else f"step_{global_step:08d}.pt")


def upgrade_names(lora: dict) -> dict:
    """A version-1 ``lora`` dict (attribute-path names) under the drafter head's own names."""
    return {LEGACY_NAMES.get(n, n): t for n, t in lora.items()}


def check_plain(x, where: str) -> None:
    """Only what ``weights_only`` loading accepts, so a saved file can always be read back."""
    if isinstance(x, dict):
        for k, v in x.items():
            check_plain(k, where)
            check_plain(v, f"{where}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        for v in x:
            check_plain(v, where)
    elif not isinstance(x, PLAIN):
        raise TypeError(f"checkpoint {where} holds a {type(x).__name__}; only tensors, numbers, strings, "
                        "lists and dicts can be saved")


def write_ckpt(path, obj: dict) -> None:
    """Write the checkpoint dict ``obj`` to ``path`` atomically, creating its folder (one line if it cannot)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the checkpoint folder {path.parent} ({e.strerror or e}): "
                              "pass a writable folder as --save-lora-path") from e
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def check_writable_dir(d) -> None:
    """Create ``d`` if needed and prove a file can be written there, before any training (not at the first save)."""
    d = Path(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise CheckpointError(f"--save-lora-path {d} is not a writable folder ({e.strerror or e}): "
                              "pass a folder you can write to") from e


def latest_checkpoint(d) -> Path | None:
    """The checkpoint in folder ``d`` with the highest block count (``final.pt`` or ``step_*.pt``), or None."""
    d = Path(d)
    steps = sorted(p for p in d.glob("step_*.pt") if p.stem[5:].isdigit()) if d.is_dir() else []
    final = checkpoint_path(d)
    if final.is_file():
        final_step = int(read_ckpt(final).get("global_step") or 0)
        if not steps or final_step >= int(steps[-1].stem[5:]):
            return final
    return steps[-1] if steps else None


def read_ckpt(path) -> dict:
    """The raw checkpoint dict, after checking that the file exists, loads, and has our format."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: pass a .pt file inside it, e.g. {path / 'final.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a .pt file written by --save-lora-path "
                              "(e.g. DIR/final.pt)")
    ck = _load(path)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Kangaroo-DVI LoRA checkpoint (format {FORMAT!r} expected): pass a "
                              ".pt file written by --save-lora-path")
    if ck.get("version") not in READS:
        raise CheckpointError(f"checkpoint {path} has format version {ck.get('version')}, this code reads versions "
                              f"{', '.join(map(str, READS))}: use the code that wrote it, or train a new drafter")
    missing = [k for k in ("meta", "lora", "optimizer", "schedule", "ema_baseline") if k not in ck]
    if missing or not isinstance(ck["meta"], dict) or not isinstance(ck["lora"], dict):
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing) or 'meta/lora'}): "
                              f"use another checkpoint (the previous ones in {path.parent} are untouched)")
    ck["lora"] = upgrade_names(ck["lora"])
    return ck


def _load(path: Path):
    damaged = (f"checkpoint {path} is damaged or truncated ({{}}): use another checkpoint (the previous ones in "
               f"{path.parent} are untouched)")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip; this catches truncation and random bytes
        raise CheckpointError(damaged.format("not a complete zip archive"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged member, unpickling errors, ...: all mean "unusable file"
        if isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            raise CheckpointError(f"checkpoint {path} holds Python objects beyond tensors and plain values, so it "
                                  "was not written by --save-lora-path and was not loaded (it could run code): "
                                  "pass a Kangaroo-DVI LoRA checkpoint") from e
        raise CheckpointError(damaged.format(type(e).__name__)) from e
