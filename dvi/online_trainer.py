"""Online DVI trainer: one optimizer step on the drafter head's LoRA tensors per call.

    total = w_kl (kd KD_fwd + rkl KL_rev) + w_ce CE + w_pg PG - w_ent H
"""
from __future__ import annotations

import time

import torch

from dvi import losses as L
from dvi.buffer import STORES
from dvi.presets import LossPreset, get_preset
from dvi.schedule import PiecewiseSchedule
from dvi.types import DVIConfigError


class OnlineTrainer:
    """Trains ``model.dvi_trainable_params()`` (the LoRA A/B) only; the verifier and base weights never change.

    ``model`` is duck-typed: ``drafter_logits_from_hk(hk [B, d]) -> [B, V] float32`` and ``dvi_trainable_params()``.
    KD/KL are exact over V for ``store_mode="full"`` (batch["z_phi"]) and renormalised over the stored top-K
    (batch["z_idx"], batch["z_val"]) for ``"topk"``. Terms whose effective weight is exactly 0 are not computed
    (reported as 0.0). Reported ``w_*`` are the effective weights (schedule x preset); ``baseline`` is the EMA
    baseline this step's PG used (``ema_baseline`` is then updated with the mean reward of the PG-masked samples).

    Time budget: ``step`` measures its own wall time (forward, backward, clip, optimizer step, stats) and reports
    it as ``ms``; ``over_budget`` is True when ms > max_ms (None: no budget). A step is never interrupted part-way,
    which could leave the optimizer half-updated; the driver decides what to do (it warns).
    """

    def __init__(self, model, lr: float, tau: float, schedule: PiecewiseSchedule, max_ms: float | None,
                 store_mode: str, topk: int, vocab_size: int, *, preset: str | LossPreset = "full",
                 entropy_weight: float = 0.0, ema_decay: float = 0.99, weight_decay: float = 0.0,
                 grad_clip: float | None = 1.0):
        if store_mode not in STORES:
            raise DVIConfigError(f"--dvi-store must be one of {STORES}, got {store_mode!r}")
        if tau <= 0:
            raise DVIConfigError(f"KD temperature tau must be > 0, got {tau}")
        params = list(model.dvi_trainable_params())
        if not params:
            raise ValueError("model.dvi_trainable_params() is empty: attach the drafter head before training")
        self.model, self.tau, self.schedule, self.max_ms = model, tau, schedule, max_ms
        self.store_mode, self.topk, self.vocab_size = store_mode, topk, vocab_size
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.entropy_weight, self.ema_decay, self.grad_clip = entropy_weight, ema_decay, grad_clip
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.ema_baseline = 0.0
        # pruned drafter vocabulary (FR-Spec): the drafter's logits have N columns, for the ids drafter_vocab;
        # sub_of maps a full-vocabulary id to its column (-1 outside). Losses live in that N-token space.
        vocab = getattr(model, "drafter_vocab", None)
        self.drafter_vocab, self.sub_of = vocab, None
        if vocab is not None:
            self.sub_of = torch.full((vocab_size,), -1, dtype=torch.long, device=vocab.device)
            self.sub_of[vocab] = torch.arange(len(vocab), device=vocab.device)
        self.n_cols = vocab_size if vocab is None else len(vocab)
        head = getattr(getattr(model, "drafter_head", None), "proj", None)
        ref = head.base.weight if head is not None else params[0]
        self._hk_device, self._hk_dtype = ref.device, (ref.dtype if head is not None else None)

    def effective_weights(self) -> dict:
        """Schedule weights x preset factors at the schedule's current step."""
        w, p, s = self.schedule.weights(), self.preset, self.schedule
        w_ce = s.ce_max if p.cold_start else w["ce"]
        w_pg = s.pgmax if p.cold_start else w["pg"]
        return {"kd": w["kl"] * p.kd, "rkl": w["kl"] * p.rkl, "ce": w_ce * p.ce, "pg": w_pg * p.pg,
                "kl": w["kl"] if (p.kd or p.rkl) else 0.0, "ent": float(self.entropy_weight)}

    def step(self, batch: dict, global_step: int) -> dict:
        t0 = time.perf_counter()
        self.schedule.set_step(global_step)
        w = self.effective_weights()
        with torch.enable_grad():
            hk = batch["hk"].to(device=self._hk_device, dtype=self._hk_dtype or batch["hk"].dtype)
            logits = self.model.drafter_logits_from_hk(hk)
            if logits.shape[-1] != self.n_cols:
                raise ValueError(f"drafter logits have {logits.shape[-1]} columns, expected {self.n_cols}")
            dev = logits.device
            tokens, reward = batch["token"].to(dev), batch["reward"].to(dev).float()
            first_rej = batch["is_first_reject"].to(dev)
            inside = None
            if self.sub_of is not None:  # CE/PG only where the target is inside the sub-vocabulary
                tokens = self.sub_of.to(dev)[tokens]
                inside = tokens >= 0
                tokens = tokens.clamp(min=0)
            baseline = self.ema_baseline
            zero = logits.new_zeros(())
            terms = dict.fromkeys(("kd", "rkl", "ce", "pg", "entropy"), zero)
            if w["kd"] or w["rkl"]:
                if self.store_mode == "full":
                    a, b = logits, batch["z_phi"].to(dev)
                    if self.drafter_vocab is not None:  # the verifier renormalised over the sub-vocabulary
                        b = b.index_select(1, self.drafter_vocab.to(dev))
                    fwd, rev = L.kd_forward_kl_full, L.kd_reverse_kl_full
                else:
                    idx = batch["z_idx"].to(dev).long()
                    if idx.shape[-1] != self.topk:
                        raise ValueError(f"batch z_idx has K={idx.shape[-1]}, trainer expects --dvi-topk {self.topk}")
                    if self.sub_of is None:
                        a, b = logits.gather(1, idx), batch["z_val"].to(dev)
                    else:  # top-K intersected with the sub-vocabulary
                        col = self.sub_of.to(dev)[idx]
                        a, b = L.restrict_topk(logits.gather(1, col.clamp(min=0)), batch["z_val"].to(dev), col >= 0)
                    fwd, rev = L.kd_forward_kl_topk, L.kd_reverse_kl_topk
                if a.shape[0]:
                    if w["kd"]:
                        terms["kd"] = fwd(a, b, self.tau)
                    if w["rkl"]:
                        terms["rkl"] = rev(a, b, self.tau)
            lg, tk, rw, fr = (logits, tokens, reward, first_rej) if inside is None else \
                (logits[inside], tokens[inside], reward[inside], first_rej[inside])
            if w["ce"]:
                terms["ce"] = L.ce_accepted(lg, tk, rw)
            if w["pg"]:
                terms["pg"] = L.policy_gradient(lg, tk, rw, fr, baseline)
            if w["ent"]:
                terms["entropy"] = L.entropy(logits)
            total = (w["kd"] * terms["kd"] + w["rkl"] * terms["rkl"] + w["ce"] * terms["ce"]
                     + w["pg"] * terms["pg"] - w["ent"] * terms["entropy"])
            if total.requires_grad:
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
                self.optimizer.step()

        pg_m = L.pg_mask(reward, first_rej)
        n_ce, n_pg = int(L.ce_mask(reward, first_rej).sum()), int(pg_m.sum())
        if n_pg:
            m = float(reward[pg_m].mean())
            self.ema_baseline = self.ema_decay * self.ema_baseline + (1 - self.ema_decay) * m
        vals = torch.stack([total.detach(), *(t.detach() for t in terms.values())]).tolist()
        stats = dict(zip(("loss", "kd", "rkl", "ce", "pg", "entropy"), vals))
        stats.update(w_kl=w["kl"], w_ce=w["ce"], w_pg=w["pg"], w_ent=w["ent"], reward_mean=float(reward.mean()),
                     baseline=baseline, n_ce=n_ce, n_pg=n_pg)
        ms = (time.perf_counter() - t0) * 1000.0
        stats.update(ms=ms, over_budget=self.max_ms is not None and ms > self.max_ms)
        return stats

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "ema_baseline": self.ema_baseline}

    def load_state_dict(self, s: dict) -> None:
        self.optimizer.load_state_dict(s["optimizer"])
        self.schedule.load_state_dict(s["schedule"])
        self.ema_baseline = float(s["ema_baseline"])
