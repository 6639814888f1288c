"""One way to build a session: a ``SessionConfig``, a ``DrafterConfig`` and (to learn, or to keep a deployed drafter's
metrics) a ``DVIConfig`` go in, a ready ``Session`` comes out. Every entry point builds its session here: the Kangaroo
driver (``evaluation/inference_kangaroo.py``), the server (``kangaroo_dvi/serve/``), the library (``KangarooDVI``),
the Hugging Face hook (``kangaroo_dvi/hf.py``), the benchmark (``scripts/benchmark/``) and the exports
(``kangaroo_dvi/export/``).

    runtime       torch's threads, the engine switch, the weights format (``kangaroo.runtime.apply_runtime``); seed
    checkpoint    the drafter checkpoint deployed or resumed: ``drafter_checkpoint`` (``--load-lora``), else, online,
                  the newest in the save folder (``dvi.deploy.resume_checkpoint``); its metadata read once
                  (``dvi.deploy.read_deployment``)
    model         the tokenizer and base model (unless given), checked against the configs, split at the exit layer
                  with the adapter the config or the checkpoint names (``session_config.resolved``)
    vocabulary    the drafter head pruned: to the checkpoint's ids when it was trained on a pruned vocabulary, else
                  as ``--drafter-vocab`` says (``kangaroo.drafter_config.apply_drafter_vocab``)
    drafter head  deployed as the checkpoint says (``dvi.deploy.deploy_drafter``, no trainer), or a LoRA head shaped
                  by ``dvi_cfg.lora`` for the learner (online: trained, and resumed from the checkpoint)
    learner       ``DVILearner``, with a ``DVIConfig`` only: online it trains; deployed it keeps the metrics
    drafting      one drafter chain for the session, a ``DrafterFactory`` for a server's requests, or none (the
                  caller drafts: the benchmark's methods, the exports)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from common.config_fields import check_against_model
from common.errors import ConfigError
from dvi.config import DVIConfig
from dvi.deploy import DeploymentMeta, deploy_drafter, read_deployment, resume_checkpoint
from kangaroo.drafter_config import DrafterConfig, apply_drafter_vocab, build_drafter, wants_feature_drafter
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.runtime import apply_runtime
from kangaroo_dvi.session_config import SessionConfig, resolved

ONE_DRAFTER, PER_REQUEST, NO_DRAFTER = "one", "per_request", "none"   # build_session's ``drafting``


@dataclass
class Session:
    config: SessionConfig                 # resolved: device, dtype, adapter mode, path and window
    drafter_config: DrafterConfig         # its model id filled
    model: KangarooModel
    tokenizer: Any                        # None when a base model was given without one
    eos: set[int]                         # empty without a tokenizer
    learner: Any = None                   # DVILearner: online it trains; deployed it keeps the metrics
    checkpoint: DeploymentMeta | None = None  # the drafter checkpoint deployed or resumed
    drafter: Any = None                   # drafting="one": the drafter chain of the whole session
    drafter_factory: Any = None           # drafting="per_request": a server's DrafterFactory

    @property
    def online(self) -> bool:
        return self.learner is not None and self.learner.online

    @property
    def resumed_from(self) -> str | None:
        """The checkpoint an online session resumed from (None: it started afresh, or does not learn)."""
        return self.checkpoint.path if self.online and self.checkpoint is not None else None


def build_session(session_cfg: SessionConfig, drafter_cfg: DrafterConfig, dvi_cfg: DVIConfig | None = None, *,
                  base_model=None, tokenizer=None, drafting: str = ONE_DRAFTER,
                  check_model: Callable[[Any], None] | None = None, print_fn=print) -> Session:
    """The session the configs describe. ``dvi_cfg``: a learner (online: trains; else keeps a deployed drafter's
    metrics); None: no learner. ``base_model`` (and ``tokenizer``): an already loaded Llama instead of
    ``session_cfg.model_id``'s. ``drafting``: ``ONE_DRAFTER``, ``PER_REQUEST`` or ``NO_DRAFTER``. ``check_model``: the
    caller's own checks against the model's config, run with the configs' own before anything is built on it. A bad
    value or checkpoint raises ``ConfigError`` / ``CheckpointError``: one line naming the flag and the fix."""
    online = dvi_cfg is not None and dvi_cfg.online
    if base_model is not None and session_cfg.device is None:  # the device of the model given
        session_cfg = replace(session_cfg, device=str(base_model.device))
    apply_runtime(session_cfg)
    if session_cfg.seed is not None:
        torch.manual_seed(session_cfg.seed)
    checkpoint = find_checkpoint(session_cfg, dvi_cfg, print_fn)
    saved_window = None if checkpoint is None else checkpoint.adapter_window
    cfg = resolved(session_cfg, saved_window, trains=online or checkpoint is not None)
    dcfg = drafter_cfg if drafter_cfg.model_id else replace(drafter_cfg, model_id=cfg.model_id)
    if base_model is None:
        from kangaroo.model_loading import load_causal_lm, load_tokenizer

        tokenizer = tokenizer or load_tokenizer(cfg.model_id)
        base_model = load_causal_lm(cfg.model_id, device=cfg.device, dtype=cfg.dtype)
    check_against_model(base_model.config, dcfg, dvi_cfg)
    if check_model is not None:
        check_model(base_model.config)
    model = KangarooModel(model_id=cfg.model_id, exit_layer=dcfg.exit_layer, base_model=base_model,
                          adapter_mode=cfg.adapter_mode, adapter_path=cfg.adapter_path,
                          adapter_window=cfg.adapter_window)
    apply_drafter_vocab(dcfg, model, tokenizer, print_fn,
                        trained_on=None if checkpoint is None else checkpoint.drafter_vocab)
    learner = attach_drafter(model, dcfg, dvi_cfg, checkpoint, print_fn)
    from kangaroo.greedy import eos_ids_of

    eos = eos_ids_of(tokenizer, model.config) if tokenizer is not None else set()
    session = Session(cfg, dcfg, model, tokenizer, eos, learner, checkpoint)
    if drafting == ONE_DRAFTER:
        session.drafter = build_drafter(dcfg, model, print_fn, online=online)
    elif drafting == PER_REQUEST:
        from kangaroo_dvi.serve.drafting import DrafterFactory

        session.drafter_factory = DrafterFactory(dcfg, model, online=online, print_fn=print_fn)
    elif drafting != NO_DRAFTER:
        raise ValueError(f"drafting {drafting!r}: use {ONE_DRAFTER}, {PER_REQUEST} or {NO_DRAFTER}")
    if learner is not None:  # the held-out set, once the drafting set the head's precision (dvi/heldout_eval.py)
        from dvi.heldout_eval import attach

        attach(learner, tokenizer, steps=dcfg.steps, print_fn=print_fn)
    return session


def find_checkpoint(cfg: SessionConfig, dvi_cfg: DVIConfig | None, print_fn=print) -> DeploymentMeta | None:
    """The drafter checkpoint of the session, its metadata read: ``cfg.drafter_checkpoint``, else ``dvi_cfg.io.load``;
    an online session without one resumes from the newest in its save folder (unless ``cfg.restart``), a folder it
    must be able to write to now (not at the first save, after the training)."""
    path = cfg.drafter_checkpoint or (dvi_cfg.io.load if dvi_cfg is not None else "")
    if dvi_cfg is not None and dvi_cfg.online:
        from dvi.checkpoint import check_writable_dir

        check_writable_dir(dvi_cfg.io.save_dir)
        if not path and not cfg.restart:
            path = resume_checkpoint(dvi_cfg.io.save_dir, print_fn)
    return read_deployment(path) if path else None


def attach_drafter(model, dcfg: DrafterConfig, dvi_cfg: DVIConfig | None, checkpoint: DeploymentMeta | None,
                   print_fn=print):
    """The drafter head (deployed from ``checkpoint`` unless the session learns; a LoRA head of ``dvi_cfg.lora``
    otherwise, with a ``DVIConfig``), the feature drafter when ``dcfg``'s chain names it (the checkpoint's, or a new
    one to train online), and the learner (None without a ``DVIConfig``)."""
    online = dvi_cfg is not None and dvi_cfg.online
    if checkpoint is not None and not online:
        deploy_drafter(model, checkpoint)
        print_fn(f"[dvi] loaded {checkpoint.path} (deploy)")
    elif dvi_cfg is not None:
        from kangaroo.drafter_head import attach_drafter_head

        attach_drafter_head(model, r=dvi_cfg.lora.r, alpha=dvi_cfg.lora.alpha)
    if wants_feature_drafter(dcfg, online) and getattr(model, "feature_drafter", None) is None:
        if not online and checkpoint is not None:
            raise ConfigError(f"--drafter names feature and {checkpoint.path} holds no feature drafter: pass a "
                              "checkpoint of a run that trained one (--drafter with feature, --dvi-online true), or "
                              "drop feature from --drafter")
        if dvi_cfg is None:
            raise ConfigError("--drafter names feature, whose drafter must be trained: pass --dvi-online true to "
                              "train it, or --load-lora CKPT (a checkpoint that holds one) to deploy it")
        from kangaroo.feature_drafter import attach_feature_drafter

        # before the learner, which trains it; its head's LoRA shaped as the run's
        attach_feature_drafter(model, dcfg.feature_window, dvi_cfg.lora.r, dvi_cfg.lora.alpha)
    if dvi_cfg is None:
        return None
    if online:
        dvi_cfg = warm_start(model, dvi_cfg, checkpoint, print_fn)
    from dvi.online_loop import DVILearner

    resume = checkpoint.path if online and checkpoint is not None else ""  # deployed above, or nothing to load
    learner = DVILearner(model, replace(dvi_cfg, io=replace(dvi_cfg.io, load=resume)), print_fn=print_fn)
    if checkpoint is not None and not online:  # the state saved beside the deployed drafter (its trainer steps)
        learner.loaded_extra = dict(checkpoint.extra)
    return learner


def warm_start(model, dvi_cfg: DVIConfig, checkpoint: DeploymentMeta | None, print_fn=print) -> DVIConfig:
    """An online session's drafters start from the warm start ``dvi_cfg.io.warm_start`` (``dvi/warm_start.py``;
    every check of a deploy: the model, the LoRA shape, the vocabulary, the feature drafter's shape) unless it
    resumes; a run that started from one (now, or the run it resumes) trains its feature drafter at
    ``feature_lr_warm``. Returns the settings the learner takes (``io.warm_start`` kept only where it was loaded)."""
    path, warm = dvi_cfg.io.warm_start, bool(checkpoint is not None and checkpoint.extra.get("warm_started"))
    if path and checkpoint is not None:
        print_fn(f"[dvi] --dvi-warm-start {path} ignored: resuming from {checkpoint.path}")
        path = ""
    elif path:
        from dvi.checkpoint import load_ckpt

        load_ckpt(path, model, None, None)
        print_fn(f"[dvi] drafters start from the warm start {path}")
        warm = True
    trainer = replace(dvi_cfg.trainer, feature_lr=dvi_cfg.trainer.feature_lr_warm) if warm else dvi_cfg.trainer
    return replace(dvi_cfg, io=replace(dvi_cfg.io, warm_start=path), trainer=trainer)
