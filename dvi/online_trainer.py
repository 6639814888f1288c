"""Online DVI trainer: one optimizer step on the drafter head's LoRA tensors (and a trained adapter's) per call.

    total = w_kl (kd KD_fwd + rkl KL_rev + kd kd_top1 KD_top1) + w_ce CE + w_pg PG - w_ent H

KD_top1 (``cfg.kd_top1`` > 0) is the top-1 distillation term: CE on the verifier's greedy token at every row.
PG is REINFORCE on the drafted token (``cfg.pg_form="reinforce"``, the work plan's) or the exact expected-acceptance
gradient with the verifier's counterfactual reward (``"expected"``, ``losses.expected_acceptance``).

The trainer trains one part (``dvi/trainable_parts.py``): the self-drafter's (a ``TrainableDrafter``, the default:
the stored hk, or with a trained adapter ``adapter(segment)[last row]``, recomputed under the current weights) or
the feature drafter's (its layer over each tuple's feature segment). The part picks the tuples it trains on and
computes its head's input; the objective is the same.
"""
from __future__ import annotations

import time

import torch

from dvi import losses as L
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.presets import LossPreset, get_preset
from dvi.schedule import PiecewiseSchedule
from dvi.trainable_parts import as_part
from dvi.types import Batch
from kangaroo.drafter_head import TrainableDrafter

TERMS = ("kd", "rkl", "kd_top1", "ce", "pg", "entropy")


class OnlineTrainer:
    """Trains the drafter head's trainable tensors (the LoRA A/B), and the trained adapter's when the drafter has
    one, with one optimizer; the verifier and base weights never change.

    ``drafter`` is a ``TrainableDrafter`` (``kangaroo/drafter_head.py``): its ``drafter_head`` (``head(hk [B, d]) ->
    [B, N] float32``), ``drafter_vocab`` (None, or the [N] ids of a pruned head), ``trained_adapter`` (None, or the
    adapter trained with the head) and ``rotary_emb`` (the model's, for the adapter). KD/KL are
    exact over V for a batch of store full (``batch.z_phi``) and renormalised over the stored top-K
    (``batch.z_idx``, ``batch.z_val``) for top-K. Terms whose effective weight is exactly 0 are not
    computed (reported as 0.0). Reported ``w_*`` are the effective weights (schedule x preset); ``baseline`` is the
    EMA baseline this step's PG used (``ema_baseline`` is then updated with the mean reward of the PG-masked samples).

    Time budget: ``step`` measures its own wall time (forward, backward, clip, optimizer step, stats) and reports
    it as ``ms``; ``over_budget`` is True when ms > cfg.max_ms (None: no budget). A step is never interrupted
    part-way, which could leave the optimizer half-updated; the driver decides what to do (it warns).
    """

    def __init__(self, drafter: TrainableDrafter, cfg: TrainerConfig, schedule: PiecewiseSchedule | ScheduleConfig,
                 vocab_size: int, *, preset: LossPreset | None = None, ema_decay: float = 0.99,
                 weight_decay: float = 0.0, grad_clip: float | None = 1.0):
        """``drafter``: a ``TrainableDrafter`` (its self-drafter's part) or a part of ``dvi/trainable_parts.py``.
        ``preset`` overrides ``cfg.ablation`` with loss factors of one's own (experiments, tests)."""
        self.part = as_part(drafter)
        self.model = getattr(self.part, "drafter", drafter)  # what it trains: the model or shadow of a self part
        self.head, self.cfg, self.vocab_size = self.part.drafter_head, cfg, vocab_size
        self.tau, self.max_ms = cfg.tau, cfg.max_ms
        self.schedule = schedule if isinstance(schedule, PiecewiseSchedule) else PiecewiseSchedule.from_config(schedule)
        self.preset = preset or get_preset(cfg.ablation)
        self.entropy_weight, self.ema_decay, self.grad_clip = cfg.entropy_weight, ema_decay, grad_clip
        self.params = self.part.params()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=weight_decay)
        self.ema_baseline = 0.0
        # pruned drafter vocabulary (FR-Spec): the drafter's logits have N columns, for the ids drafter_vocab;
        # sub_of maps a full-vocabulary id to its column (-1 outside). Losses live in that N-token space.
        vocab = self.part.drafter_vocab
        self.drafter_vocab, self.sub_of = vocab, None
        if vocab is not None:
            self.sub_of = torch.full((vocab_size,), -1, dtype=torch.long, device=vocab.device)
            self.sub_of[vocab] = torch.arange(len(vocab), device=vocab.device)
        self.n_cols = vocab_size if vocab is None else len(vocab)

    def effective_weights(self) -> dict:
        """Schedule weights x preset factors at the schedule's current step."""
        w, p, s = self.schedule.weights(), self.preset, self.schedule
        w_ce = s.ce_max if p.cold_start else w["ce"]
        w_pg = s.pgmax if p.cold_start else w["pg"]
        return {"kd": w["kl"] * p.kd, "rkl": w["kl"] * p.rkl, "kd_top1": w["kl"] * p.kd * self.cfg.kd_top1,
                "ce": w_ce * p.ce, "pg": w_pg * p.pg,
                "kl": w["kl"] if (p.kd or p.rkl) else 0.0, "ent": float(self.entropy_weight)}

    def step(self, batch: Batch, global_step: int) -> dict:
        """One optimizer step on the tuples of ``batch`` this trainer's part trains on."""
        t0 = time.perf_counter()
        self.schedule.set_step(global_step)
        w = self.effective_weights()
        batch = self.part.select(batch)
        with torch.enable_grad():
            with self.part.autocast():
                logits = self.head(self.part.head_input(batch))
            if logits.shape[-1] != self.n_cols:
                raise ValueError(f"drafter logits have {logits.shape[-1]} columns, expected {self.n_cols}")
            dev = logits.device
            reward, first_rej = batch.reward.to(dev).float(), batch.is_first_reject.to(dev)
            kd_only = batch.kd_only.to(dev)
            baseline = self.ema_baseline
            terms = dict.fromkeys(TERMS, logits.new_zeros(()))
            vt = verifier_tokens(batch).to(dev)
            terms.update(self._kd_terms(logits, batch, w))
            terms.update(self._token_terms(logits, batch.token.to(dev), vt, reward, first_rej, kd_only, baseline, w))
            total = (w["kd"] * terms["kd"] + w["rkl"] * terms["rkl"] + w["kd_top1"] * terms["kd_top1"]
                     + w["ce"] * terms["ce"] + w["pg"] * terms["pg"] - w["ent"] * terms["entropy"])
            self._update(total)
        stats = self._stats(total, terms, w, reward, first_rej, kd_only, baseline)
        ms = (time.perf_counter() - t0) * 1000.0
        stats.update(ms=ms, over_budget=self.max_ms is not None and ms > self.max_ms)
        return stats

    def _kd_terms(self, logits: torch.Tensor, batch: Batch, w: dict) -> dict:
        """KD (forward KL) and reverse KL against the verifier: full V, or renormalised over the stored top-K."""
        if not (w["kd"] or w["rkl"]):
            return {}
        dev = logits.device
        if batch.store == "full":
            a, b = logits, batch.z_phi.to(dev)
            if self.drafter_vocab is not None:  # the verifier renormalised over the sub-vocabulary
                b = b.index_select(1, self.drafter_vocab.to(dev))
            fwd, rev = L.kd_forward_kl_full, L.kd_reverse_kl_full
        else:
            idx = batch.z_idx.to(dev).long()
            if self.sub_of is None:
                a, b = logits.gather(1, idx), batch.z_val.to(dev)
            else:  # top-K intersected with the sub-vocabulary
                col = self.sub_of.to(dev)[idx]
                a, b = L.restrict_topk(logits.gather(1, col.clamp(min=0)), batch.z_val.to(dev), col >= 0)
            fwd, rev = L.kd_forward_kl_topk, L.kd_reverse_kl_topk
        if not a.shape[0]:
            return {}
        out = {}
        if w["kd"]:
            out["kd"] = fwd(a, b, self.tau)
        if w["rkl"]:
            out["rkl"] = rev(a, b, self.tau)
        return out

    def _token_terms(self, logits, tokens, vt, reward, first_rej, kd_only, baseline: float, w: dict) -> dict:
        """Top-1 distillation (every row), CE and PG (judged rows only, not KD-only ones) on the drafted token
        ``tokens`` or the verifier's ``vt``, and the entropy bonus. With a pruned sub-vocabulary each token term
        keeps the rows whose target is inside it."""
        out = {}
        if w["kd_top1"]:
            lg, v, _ = self._inside(logits, vt)
            out["kd_top1"] = L.kd_top1(lg, v)
        if w["ent"]:
            out["entropy"] = L.entropy(logits)
        if w["ce"]:
            lg, tk, ix = self._inside(logits, tokens)
            out["ce"] = L.ce_accepted(lg, tk, reward[ix], kd_only[ix])
        if w["pg"] and self.cfg.pg_form == "expected":
            lg, v, ix = self._inside(logits, vt)
            out["pg"] = L.expected_acceptance(lg, v, reward[ix], first_rej[ix], kd_only[ix])
        elif w["pg"]:
            lg, tk, ix = self._inside(logits, tokens)
            out["pg"] = L.policy_gradient(lg, tk, reward[ix], first_rej[ix], baseline, kd_only[ix])
        return out

    def _cols(self, tokens: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary ids -> the drafter's columns (the ids themselves without a pruned sub-vocabulary)."""
        return tokens if self.sub_of is None else self.sub_of.to(tokens.device)[tokens]

    def _inside(self, logits: torch.Tensor, tokens: torch.Tensor):
        """(logits, columns, row mask) of the rows whose ``tokens`` entry is one of the drafter's columns (all rows
        without a pruned sub-vocabulary)."""
        if self.sub_of is None:
            return logits, tokens, torch.ones_like(tokens, dtype=torch.bool)
        cols = self._cols(tokens)
        ix = cols >= 0
        return logits[ix], cols[ix], ix

    def _update(self, total: torch.Tensor) -> None:
        if not total.requires_grad:
            return
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()

    def _stats(self, total, terms: dict, w: dict, reward, first_rej, kd_only, baseline: float) -> dict:
        pg_m = L.pg_mask(reward, first_rej, kd_only)
        n_ce, n_pg = int(L.ce_mask(reward, first_rej, kd_only).sum()), int(pg_m.sum())
        judged = ~kd_only.bool()
        if n_pg:
            m = float(reward[pg_m].mean())
            self.ema_baseline = self.ema_decay * self.ema_baseline + (1 - self.ema_decay) * m
        vals = torch.stack([total.detach(), *(t.detach() for t in terms.values())]).tolist()
        stats = dict(zip(("loss", *TERMS), vals))
        reward_mean = float(reward[judged].mean()) if bool(judged.any()) else None  # judged rows only
        stats.update(w_kl=w["kl"], w_ce=w["ce"], w_pg=w["pg"], w_ent=w["ent"], reward_mean=reward_mean,
                     baseline=baseline, n_ce=n_ce, n_pg=n_pg, n_kd_only=int(kd_only.sum()))
        return stats

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "ema_baseline": self.ema_baseline}

    def load_state_dict(self, s: dict) -> None:
        self.optimizer.load_state_dict(s["optimizer"])
        self.schedule.load_state_dict(s["schedule"])
        self.ema_baseline = float(s["ema_baseline"])


def verifier_tokens(batch: Batch) -> torch.Tensor:
    """[n] the verifier's greedy token at each row: the first stored top-K index (``torch.topk`` sorts), or the
    argmax of the full logits. Also for tuples of sampled traffic: the T -> 0 target, the same at every temperature
    (docs/dvi.md, "Sampled traffic")."""
    return batch.z_idx[:, 0] if batch.z_phi is None else batch.z_phi.argmax(dim=1)
