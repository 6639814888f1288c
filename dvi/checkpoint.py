"""DVI checkpoints: the LoRA tensors of the drafter head and the trainer state, never the base weights.

    {"format": "kangaroo-dvi-lora", "version": 2, "meta": {...}, "lora": {name: tensor}, "optimizer": sd | None,
     "schedule": sd | None, "ema_baseline": float, "global_step": int | None, "extra": dict}

``lora`` holds the drafter head's named trainable tensors (``DrafterHead.named_trainable``: ``A``, ``B``) and
``meta["drafter"]`` its metadata. With a trained adapter (``--adapter-mode train``) ``adapter`` holds its tensors
by name (``kangaroo.trained_adapter.adapter_tensors``) and ``meta["adapter_window"]`` its window; otherwise (and in
files written before) both are None/absent. Loading refuses an adapter checkpoint into a run without one and the
reverse, in one line naming the flag. Version 1 files named them by attribute path (``drafter_head.proj.A``); they
are read through ``LEGACY_NAMES`` and load as before.

Writes are atomic (temp file in the same folder, fsync, os.replace): a crash mid-save leaves the previous file
under that name intact. Loads use ``weights_only=True`` (a checkpoint cannot run code) and validate everything
(file, format, meta, tensor names and shapes, optimizer layout) before anything in the model or optimizer changes.
The model is recognised by a sample of its LM-head weights (``head_sample``, compared with a float16 tolerance),
so a moved folder or another dtype still matches and two models in folders of the same name do not; checkpoints
written before the sample existed fall back to the last path component of ``model_id``. On resume the optimizer
state (moments, step) is restored but this run's hyper-parameters (``--dvi-lr``) are kept, as for the schedule.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from common.errors import UserError
from kangaroo.trained_adapter import adapter_tensors

FORMAT, VERSION = "kangaroo-dvi-lora", 2
READS = (1, 2)
LEGACY_NAMES = {"drafter_head.proj.A": "A", "drafter_head.proj.B": "B"}  # version 1 -> the head's own names
# meta key -> the flag that sets it (None: it comes with the model, so --model-id is the fix)
CHECKED = {"model_id": "--model-id", "num_hidden_layers": None, "hidden_size": None, "vocab_size": None,
           "exit_layer": "--exitlayer", "lora_r": "--dvi-lora-r", "lora_alpha": "--dvi-lora-alpha"}
PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or made for another model/drafter."""


def checkpoint_path(dir, global_step: int | None = None) -> Path:
    return Path(dir) / ("final.pt" if global_step is None else f"step_{global_step:08d}.pt")


def _lora_params(model) -> dict:
    head = getattr(model, "drafter_head", None)
    return {} if head is None else head.named_trainable()


def upgrade_names(lora: dict) -> dict:
    """A version-1 ``lora`` dict (attribute-path names) under the drafter head's own names."""
    return {LEGACY_NAMES.get(n, n): t for n, t in lora.items()}


def _cpu_copies(tensors: dict) -> dict:
    return {n: p.detach().cpu().clone() for n, p in tensors.items()}


def lora_state_dict(model) -> dict:
    return _cpu_copies(_lora_params(model))


def _lora_problems(model, sd: dict) -> list[str]:
    return _tensor_problems(_lora_params(model), sd)


def _tensor_problems(own: dict, sd: dict) -> list[str]:
    probs = [f"missing {n}" for n in own if n not in sd] + [f"unexpected {n}" for n in sd if n not in own]
    probs += [f"{n} has shape {list(getattr(sd[n], 'shape', []))}, expected {list(p.shape)}"
              for n, p in own.items() if n in sd and (not torch.is_tensor(sd[n]) or sd[n].shape != p.shape)]
    return probs


def load_lora_state_dict(model, sd: dict) -> None:
    """Copy ``sd`` into the model's LoRA tensors in place (optimizers keep pointing at the same tensors)."""
    probs = _lora_problems(model, sd)
    if probs:
        raise CheckpointError("LoRA tensors do not fit this drafter head (" + "; ".join(probs)
                              + "): use a checkpoint made with the same model, --exitlayer and --dvi-lora-r")
    with torch.no_grad():
        for n, p in _lora_params(model).items():
            p.copy_(sd[n])


def _trained_adapter(model):
    return getattr(model, "trained_adapter", None)


def adapter_state_dict(model) -> dict | None:
    """The trained adapter's tensors (None without one)."""
    adapter = _trained_adapter(model)
    return None if adapter is None else _cpu_copies(adapter_tensors(adapter))


def _adapter_mismatch(path: Path, ck: dict, model) -> str | None:
    """One line when the checkpoint's adapter (or its absence) does not fit this run's drafter."""
    saved, adapter = ck["meta"].get("adapter_window"), _trained_adapter(model)
    now = None if adapter is None else adapter.window
    if saved is None and now is None:
        return None
    if saved is None:
        return (f"checkpoint {path} was trained without an adapter (LoRA head only) but this run trains one "
                "(--adapter-mode train): leave out --adapter-mode train to resume or deploy it, or train a new "
                "drafter (another --save-lora-path)")
    if now is None:
        return (f"checkpoint {path} holds a trained adapter (window {saved}) but this run drafts without it: pass "
                f"--adapter-mode train --dvi-adapter-window {saved} (or leave out --adapter-mode) to resume or deploy it")
    if saved != now:
        return (f"checkpoint {path} holds an adapter trained with --dvi-adapter-window {saved}, this run has {now}: "
                f"pass --dvi-adapter-window {saved}")
    probs = _tensor_problems(adapter_tensors(adapter), ck.get("adapter") if isinstance(ck.get("adapter"), dict) else {})
    if probs:
        return (f"checkpoint {path} holds adapter tensors that do not fit this model ({'; '.join(probs[:3])}): use "
                "a checkpoint made for this --model-id, or train a new drafter")
    return None


def head_sample(weight: torch.Tensor, n: int = 16) -> list[float]:
    """``n`` weights of the LM head at fixed, spread positions: a fingerprint of the model that survives dtype
    casts and moved folders."""
    rows = torch.linspace(0, weight.shape[0] - 1, n).long().to(weight.device)
    cols = torch.linspace(0, weight.shape[1] - 1, n).long().to(weight.device)
    return [float(x) for x in weight.detach()[rows, cols].float().cpu()]


def _verifier_head_weight(model) -> torch.Tensor:
    """The verifier's head (the model itself, whatever the drafter's vocabulary); a bare drafter: its base copy."""
    head_model = getattr(model, "head_model", None)
    return head_model.weight if head_model is not None else model.drafter_head.base_weight


def _samples_match(a, b) -> bool:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return ta.shape == tb.shape and bool(torch.allclose(ta, tb, rtol=2e-3, atol=1e-5))


def checkpoint_meta(model) -> dict:
    head, cfg = model.drafter_head, model.config
    if head is None:
        raise CheckpointError("the model has no drafter head, so there is nothing to save or load: "
                              "attach one first (kangaroo.drafter_head.attach_drafter_head)")
    drafter = head.metadata()
    return {"format": FORMAT, "version": VERSION, "model_id": str(model.model_id), "exit_layer": int(model.exit_layer),
            "hidden_size": int(cfg.hidden_size), "vocab_size": int(cfg.vocab_size),
            "num_hidden_layers": int(cfg.num_hidden_layers), "lora_r": drafter["lora_r"],
            "lora_alpha": drafter["lora_alpha"], "head_sample": head_sample(_verifier_head_weight(model)),
            "drafter_vocab": _drafter_vocab(model), "drafter": drafter,
            "adapter_window": None if _trained_adapter(model) is None else int(_trained_adapter(model).window)}


def _drafter_vocab(model):
    v = getattr(model, "drafter_vocab", None)
    return None if v is None else v.detach().cpu().clone()


def fit_lora_to_drafter_vocab(path, model, ck: dict) -> dict:
    """A full-vocabulary LoRA loads into a pruned drafter head as B[drafter_vocab] (exactly the same logits on
    the kept tokens); a pruned one loads only into a head pruned to the same ids."""
    own, saved = _drafter_vocab(model), ck["meta"].get("drafter_vocab")
    if saved is not None and (own is None or not torch.equal(torch.as_tensor(saved), own)):
        raise CheckpointError(f"checkpoint {path} was trained on a pruned drafter vocabulary of {len(saved)} tokens; "
                              f"this run's drafter has {'the full vocabulary' if own is None else len(own)}: pass "
                              f"the --drafter-vocab {len(saved)} (and counts file) it was trained with")
    if saved is None and own is not None:
        lora = dict(ck["lora"])
        for n, t in lora.items():
            if n == "B" and torch.is_tensor(t) and t.shape[0] == model.config.vocab_size:
                lora[n] = t.index_select(0, own)
        return lora
    return ck["lora"]


def _check_plain(x, where: str) -> None:
    """Only what ``weights_only`` loading accepts, so a saved file can always be read back."""
    if isinstance(x, dict):
        for k, v in x.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        for v in x:
            _check_plain(v, where)
    elif not isinstance(x, PLAIN):
        raise TypeError(f"checkpoint {where} holds a {type(x).__name__}; only tensors, numbers, strings, "
                        "lists and dicts can be saved")


def save_ckpt(path, model, opt, sched, ema_b, *, global_step: int | None = None, extra: dict | None = None) -> None:
    path = Path(path)
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    obj = {"format": FORMAT, "version": VERSION, "meta": checkpoint_meta(model), "lora": lora_state_dict(model),
           "adapter": adapter_state_dict(model),
           "optimizer": None if opt is None else opt.state_dict(),
           "schedule": None if sched is None else sched.state_dict(), "ema_baseline": float(ema_b),
           "global_step": None if global_step is None else int(global_step), "extra": extra}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the checkpoint folder {path.parent} ({e.strerror or e}): "
                              "pass a writable folder as --save-lora-path") from e
    atomic_save(obj, path)


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, rename, fsync the folder: the name holds the old file
    or the whole new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def _fsync_dir(d: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_ckpt(path) -> dict:
    """The raw checkpoint dict, after checking that the file exists, loads, and has our format."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: pass a .pt file inside it, e.g. {path / 'final.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a .pt file written by --save-lora-path "
                              "(e.g. DIR/final.pt)")
    damaged = (f"checkpoint {path} is damaged or truncated ({{}}): use another checkpoint (the previous ones in "
               f"{path.parent} are untouched)")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip; this catches truncation and random bytes
        raise CheckpointError(damaged.format("not a complete zip archive"))
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged member, unpickling errors, ...: all mean "unusable file"
        if isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            raise CheckpointError(f"checkpoint {path} holds Python objects beyond tensors and plain values, so it "
                                  "was not written by --save-lora-path and was not loaded (it could run code): "
                                  "pass a Kangaroo-DVI LoRA checkpoint") from e
        raise CheckpointError(damaged.format(type(e).__name__)) from e
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


def _same(key: str, a, b) -> bool:
    if key == "model_id":
        return Path(str(a).rstrip("/\\")).name == Path(str(b).rstrip("/\\")).name
    if key == "lora_alpha":
        return float(a) == float(b)
    return a == b


def _meta_mismatch(path: Path, saved: dict, now: dict) -> str | None:
    diff = [k for k in CHECKED if k != "model_id" and not _same(k, saved.get(k), now[k])]
    name_differs = not _same("model_id", saved.get("model_id"), now["model_id"])
    sampled = isinstance(saved.get("head_sample"), list)
    model_differs = not _samples_match(saved["head_sample"], now["head_sample"]) if sampled else name_differs
    if model_differs and name_differs:
        diff.insert(0, "model_id")
    elif model_differs and not diff:
        return (f"checkpoint {path} was made for another model of the same name {saved.get('model_id')} (its LM-head "
                "weights differ from this run's): pass the --model-id it was trained with, or train a new drafter")
    if not diff:
        return None
    fixes = [f"{CHECKED[k]} {saved.get(k)}" for k in diff if CHECKED[k]]
    if any(CHECKED[k] is None for k in diff) and "model_id" not in diff:
        fixes.insert(0, f"--model-id {saved.get('model_id')}")
    def show(m):
        return ", ".join(f"{k}={m.get(k)}" for k in diff)

    return (f"checkpoint {path} was made for {show(saved)} but this run has {show(now)}: "
            f"pass {' '.join(fixes)}, or train a new drafter")


def _optimizer_fits(opt, osd) -> bool:
    groups, saved = opt.param_groups, osd.get("param_groups", []) if isinstance(osd, dict) else []
    if len(groups) != len(saved) or any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved)):
        return False
    params = {i: p for s, g in zip(saved, groups) for i, p in zip(s["params"], g["params"])}
    for i, st in osd.get("state", {}).items():
        if i not in params:
            return False
        if any(torch.is_tensor(v) and v.dim() and v.shape != params[i].shape for v in st.values()):
            return False
    return True


def load_optimizer_keep_hparams(opt, osd: dict) -> None:
    """Restore the optimizer's state (moments, step counts) but keep this run's hyper-parameters (lr, betas,
    weight decay, ...): a resumed run's flags win over the checkpoint's."""
    mine = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    opt.load_state_dict(osd)
    for g, h in zip(opt.param_groups, mine):
        g.update(h)


def load_ckpt(path, model, opt, sched) -> float:
    """Load LoRA tensors (and, unless None, the optimizer and schedule state); return the EMA baseline.
    ``opt=None, sched=None`` is deploy mode. Nothing is modified unless every check passes."""
    path = Path(path)
    ck = read_ckpt(path)
    msg = _meta_mismatch(path, ck["meta"], checkpoint_meta(model)) or _adapter_mismatch(path, ck, model)
    if msg:
        raise CheckpointError(msg)
    ck["lora"] = fit_lora_to_drafter_vocab(path, model, ck)
    probs = _lora_problems(model, ck["lora"])
    if probs:
        raise CheckpointError(f"checkpoint {path} does not fit this drafter head ({'; '.join(probs)}): "
                              "use a checkpoint made for this model, or train a new drafter")
    for name, obj, state in (("optimizer", opt, ck["optimizer"]), ("schedule", sched, ck["schedule"])):
        if obj is not None and state is None:
            raise CheckpointError(f"checkpoint {path} holds no {name} state, so training cannot resume from it: "
                                  "load it to deploy (--dvi-online false) or start training afresh")
    if opt is not None and not _optimizer_fits(opt, ck["optimizer"]):
        raise CheckpointError(f"checkpoint {path} has optimizer state that does not fit this run's LoRA tensors: "
                              "load it to deploy (--dvi-online false) or start training afresh")
    if sched is not None and (not isinstance(ck["schedule"], dict) or "step" not in ck["schedule"]):
        raise CheckpointError(f"checkpoint {path} has no valid schedule state (a dict with its step): "
                              "use another checkpoint, or load it to deploy (--dvi-online false)")
    load_lora_state_dict(model, ck["lora"])
    if ck["meta"].get("adapter_window") is not None:
        with torch.no_grad():
            for n, p in adapter_tensors(_trained_adapter(model)).items():
                p.copy_(ck["adapter"][n])
    if opt is not None:
        load_optimizer_keep_hparams(opt, ck["optimizer"])
    if sched is not None:
        sched.load_state_dict(ck["schedule"])
    return float(ck["ema_baseline"])
