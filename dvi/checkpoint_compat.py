"""Does a checkpoint fit this run? Each function returns what does not fit (or fits it), and changes nothing.

The model is recognised by a sample of its LM-head weights (``head_sample``, compared with a float16 tolerance), so
a moved folder or another dtype still matches and two models in folders of the same name do not; checkpoints
written before the sample existed fall back to the last path component of ``model_id``. A checkpoint with a trained
adapter fits only a run that trains one with the same window, and the reverse; a pruned drafter vocabulary only the
same ids (a full-vocabulary LoRA loads into a pruned head as its kept rows). ``load_optimizer_keep_hparams``
restores an optimizer that fits.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dvi.checkpoint_file import CheckpointError
from kangaroo.trained_adapter import adapter_tensors

# meta key -> the flag that sets it (None: it comes with the model, so --model-id is the fix)
CHECKED = {"model_id": "--model-id", "num_hidden_layers": None, "hidden_size": None, "vocab_size": None,
           "exit_layer": "--exitlayer", "lora_r": "--dvi-lora-r", "lora_alpha": "--dvi-lora-alpha"}


def head_sample(weight: torch.Tensor, n: int = 16) -> list[float]:
    """``n`` weights of the LM head at fixed, spread positions: a fingerprint of the model that survives dtype
    casts and moved folders."""
    rows = torch.linspace(0, weight.shape[0] - 1, n).long().to(weight.device)
    cols = torch.linspace(0, weight.shape[1] - 1, n).long().to(weight.device)
    return [float(x) for x in weight.detach()[rows, cols].float().cpu()]


def _samples_match(a, b) -> bool:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return ta.shape == tb.shape and bool(torch.allclose(ta, tb, rtol=2e-3, atol=1e-5))


def _same(key: str, a, b) -> bool:
    if key == "model_id":
        return Path(str(a).rstrip("/\\")).name == Path(str(b).rstrip("/\\")).name
    if key == "lora_alpha":
        return float(a) == float(b)
    return a == b


def meta_mismatch(path: Path, saved: dict, now: dict) -> str | None:
    """One line naming what differs between the checkpoint's meta and this run's, and the flags that fix it."""
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


def tensor_problems(own: dict, sd: dict) -> list[str]:
    probs = [f"missing {n}" for n in own if n not in sd] + [f"unexpected {n}" for n in sd if n not in own]
    probs += [f"{n} has shape {list(getattr(sd[n], 'shape', []))}, expected {list(p.shape)}"
              for n, p in own.items() if n in sd and (not torch.is_tensor(sd[n]) or sd[n].shape != p.shape)]
    return probs


def adapter_mismatch(path: Path, ck: dict, adapter) -> str | None:
    """One line when the checkpoint's adapter (or its absence) does not fit this run's trained ``adapter`` (None:
    the run trains none)."""
    saved, now = ck["meta"].get("adapter_window"), None if adapter is None else adapter.window
    if saved is None and now is None:
        return None
    if saved is None:
        return (f"checkpoint {path} was trained without an adapter (LoRA head only) but this run trains one "
                "(--adapter-mode train): leave out --adapter-mode train to resume or deploy it, or train a new "
                "drafter (another --save-lora-path)")
    if now is None:
        return (f"checkpoint {path} holds a trained adapter (window {saved}) but this run drafts without it: pass "
                f"--adapter-mode train --dvi-adapter-window {saved} (or leave out --adapter-mode) to resume or "
                "deploy it")
    if saved != now:
        return (f"checkpoint {path} holds an adapter trained with --dvi-adapter-window {saved}, this run has {now}: "
                f"pass --dvi-adapter-window {saved}")
    probs = tensor_problems(adapter_tensors(adapter), ck.get("adapter") if isinstance(ck.get("adapter"), dict) else {})
    if probs:
        return (f"checkpoint {path} holds adapter tensors that do not fit this model ({'; '.join(probs[:3])}): use "
                "a checkpoint made for this --model-id, or train a new drafter")
    return None


def optimizer_fits(opt, osd) -> bool:
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


def fit_lora_to_drafter_vocab(path, own, ck: dict, vocab_size: int) -> dict:
    """The checkpoint's LoRA for a drafter head pruned to the ids ``own`` (None: the full vocabulary): a
    full-vocabulary LoRA loads into a pruned head as B[own] (exactly the same logits on the kept tokens); a pruned
    one loads only into a head pruned to the same ids."""
    saved = ck["meta"].get("drafter_vocab")
    if saved is not None and (own is None or not torch.equal(torch.as_tensor(saved), own)):
        raise CheckpointError(f"checkpoint {path} was trained on a pruned drafter vocabulary of {len(saved)} tokens; "
                              f"this run's drafter has {'the full vocabulary' if own is None else len(own)}: pass "
                              f"the --drafter-vocab {len(saved)} (and counts file) it was trained with")
    if saved is None and own is not None:
        lora = dict(ck["lora"])
        for n, t in lora.items():
            if n == "B" and torch.is_tensor(t) and t.shape[0] == vocab_size:
                lora[n] = t.index_select(0, own)
        return lora
    return ck["lora"]


def load_optimizer_keep_hparams(opt, osd: dict) -> None:
    """Restore the optimizer's state (moments, step counts) but keep this run's hyper-parameters (lr, betas,
    weight decay, ...): a resumed run's flags win over the checkpoint's."""
    mine = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    opt.load_state_dict(osd)
    for g, h in zip(opt.param_groups, mine):
        g.update(h)
