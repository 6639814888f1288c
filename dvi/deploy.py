"""A drafter checkpoint in a new run, read once: what it says about the drafter it holds (``DeploymentMeta``: the
model and exit layer, a trained adapter's window, the LoRA shape, the pruned drafter vocabulary, the state saved
beside it), the one way to deploy it (``deploy_drafter``: no trainer), and the checkpoint an online run resumes from
(``resume_checkpoint``: the newest in its folder).

Every entry point builds its session through ``kangaroo_dvi.session.build_session``, which calls these; the command
line's resolve steps (``kangaroo_dvi/session_flags.py``) read the same ``read_deployment``. A checkpoint with a
trained adapter loads into a model built with ``adapter_mode="train"`` and its window, one trained on a pruned
vocabulary into a head pruned to the same ids (``dvi.checkpoint.load_ckpt`` checks both, naming the flag)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dvi.checkpoint import latest_checkpoint, load_ckpt, read_ckpt
from dvi.config import LoRAConfig
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.feature_drafter import attach_feature_drafter


@dataclass(frozen=True, eq=False)
class DeploymentMeta:
    path: str
    model_id: str
    exit_layer: int
    adapter_window: int | None          # a trained adapter's window; None: the LoRA head alone
    lora: LoRAConfig                    # rank and scale of the LoRA head
    drafter_vocab: torch.Tensor | None  # [N] the ids of a pruned drafter vocabulary; None: the full one
    feature: dict | None                # a feature drafter's shape (window, lora_r, lora_alpha); None: it holds none
    extra: dict                         # plain state saved beside the drafter (calibration, trainer steps, finished)


def read_deployment(path) -> DeploymentMeta:
    """The deployment metadata of checkpoint ``path`` (a ``CheckpointError`` naming the problem when it is missing
    or not a checkpoint). A LoRA shape the file does not record is ``LoRAConfig``'s default. The file is read once
    per version (path, mtime, size): the command line's resolve steps and the session builder all ask."""
    try:
        st = Path(path).stat()
    except OSError:
        return _read_deployment(str(path), 0, -1)  # raises read_ckpt's one line
    meta = _read_deployment(str(path), st.st_mtime_ns, st.st_size)
    return replace(meta, extra=dict(meta.extra))  # the cached one's dict stays as read


@functools.lru_cache(maxsize=8)
def _read_deployment(path: str, mtime_ns: int, size: int) -> DeploymentMeta:
    ck = read_ckpt(path)
    meta, default = ck["meta"], LoRAConfig()
    vocab = meta.get("drafter_vocab")
    window, feature = meta.get("adapter_window"), ck.get("feature")
    return DeploymentMeta(path=str(path), model_id=str(meta.get("model_id") or ""),
                          exit_layer=int(meta.get("exit_layer", 0)),
                          adapter_window=None if window is None else int(window),
                          lora=LoRAConfig(r=int(meta.get("lora_r", default.r)),
                                          alpha=float(meta.get("lora_alpha", default.alpha))),
                          drafter_vocab=None if vocab is None else torch.as_tensor(vocab, dtype=torch.long),
                          feature=feature["meta"] if isinstance(feature, dict) else None,
                          extra=dict(ck.get("extra") or {}))


def peek_deployment(path) -> DeploymentMeta | None:
    """``read_deployment``, or None without a path or when the file cannot be read: for filling flags left open,
    where a missing file is reported when the configs are built and a damaged one where it is loaded, in one line."""
    if not path or not Path(path).is_file():
        return None
    try:
        return read_deployment(path)
    except Exception:
        return None


def deploy_drafter(model, deployment: DeploymentMeta) -> None:
    """Attach the LoRA drafter head shaped as the checkpoint says and load its tensors (and a trained adapter's, and
    its feature drafter's: attached as its section says when ``model`` has none yet), after every check of
    ``load_ckpt``. Prune the drafter vocabulary first (``model.set_drafter_vocab``): a full-vocabulary checkpoint
    loads into a pruned head as its kept rows."""
    attach_drafter_head(model, r=deployment.lora.r, alpha=deployment.lora.alpha)
    fm = deployment.feature
    if fm is not None and getattr(model, "feature_drafter", None) is None:
        attach_feature_drafter(model, int(fm["window"]), int(fm["lora_r"]), float(fm["lora_alpha"]))
    load_ckpt(deployment.path, model, None, None)


def resume_checkpoint(save_dir, print_fn=print) -> str:
    """The newest checkpoint in an online run's folder ``save_dir`` ("" when there is none): the same command run
    again resumes from it."""
    found = latest_checkpoint(save_dir)
    if found is None:
        return ""
    print_fn(f"[dvi] resuming from {found} (the newest checkpoint in --save-lora-path; pass --overwrite to start "
             "afresh)")
    return str(found)
