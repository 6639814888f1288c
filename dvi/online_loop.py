"""Draft, Verify & Improve: what happens after every verify/commit block (work plan step 7).

    block -> tuples -> ring buffer -> (every N blocks) trainer step -> metrics -> (every M blocks) checkpoint

For a block that drafted d_1..d_m and accepted a of them, one tuple per accepted position (reward 1) and one
for the first rejected position (reward 0, ``is_first_reject``) go into the buffer, each with the hk that
drafted it and the verifier's logits at that position. ``global_step`` counts blocks. The verifier is frozen,
so none of this can change a committed token.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dvi.background_trainer import BackgroundTrainer, ShadowDrafter
from dvi.buffer import DVIRingBuffer
from dvi.checkpoint import CheckpointError, checkpoint_path, load_ckpt, read_ckpt, save_ckpt
from dvi.metrics import MetricsLogger
from dvi.online_trainer import OnlineTrainer
from dvi.schedule import PiecewiseSchedule
from dvi.train_budget import TrainBudget
from kangaroo.speculative import Block
from kangaroo.timing import now

LOGITS_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def metrics_dir(metrics_out: str) -> Path:
    """``--metrics-out`` is a folder; a ``.csv`` path names the folder of the same name without the suffix."""
    p = Path(metrics_out or "runs/metrics")
    return p.with_suffix("") if p.suffix == ".csv" else p


@torch.no_grad()
def calibrate_ar_ms(model, n: int = 12) -> float:
    """Median wall time of one plain autoregressive step (all layers + the verifier head, one token), in ms:
    the reference behind the ``speedup`` column."""
    caches = model.new_caches(n + 8)
    x = torch.tensor([[1, 2, 3, 4]], device=model.device)
    model.forward_deep(model.forward_shallow(x, caches.shallow).h, caches.deep)
    times = []
    for i in range(n):
        t0 = now(model.device)
        h = model.forward_shallow(x[:, :1], caches.shallow).h
        model.verifier_logits(model.forward_deep(h, caches.deep)).argmax(-1).tolist()
        times.append((now(model.device) - t0) * 1e3)
    return sorted(times)[len(times) // 2]


class DVILearner:
    """Owns the buffer, the trainer, the metrics and the checkpoints of one run; ``on_block`` is the hook that
    ``kangaroo_generate`` calls after every block."""

    def __init__(self, model, args, print_fn=print):
        self.model, self.args, self.print = model, args, print_fn
        self.online = bool(args.dvi_online)
        cfg = model.config
        self.buffer = DVIRingBuffer(args.dvi_buffer_size, cfg.hidden_size, cfg.vocab_size, args.dvi_store,
                                    args.dvi_topk, LOGITS_DTYPES[args.dvi_logits_dtype], device=str(model.device),
                                    seed=args.seed)
        self.push = self.buffer.push_topk if args.dvi_store == "topk" else self.buffer.push_full
        schedule = PiecewiseSchedule(args.dvi_warmup_steps, args.dvi_kl_lambda0, args.dvi_kl_lambdamin,
                                     args.dvi_pg_lambda_max)
        # --dvi-trainer thread: the trainer updates a shadow copy of the LoRA tensors on its own thread
        self.threaded = self.online and getattr(args, "dvi_trainer", "inline") == "thread"
        self.shadow = ShadowDrafter(model) if self.threaded else None
        self.trainer = OnlineTrainer(self.shadow or model, args.dvi_lr, args.dvi_tau, schedule, args.max_online_train_ms,
                                     args.dvi_store, args.dvi_topk, cfg.vocab_size, preset=args.dvi_ablation,
                                     entropy_weight=args.dvi_entropy_weight)
        self.global_step = 0
        self.run_blocks = 0  # blocks seen by this process (global_step also counts the resumed ones)
        self.train_steps = 0
        self.over_budget = 0
        self.train_ms_total = 0.0
        self.blocks_ms_total = 0.0
        self.budget = TrainBudget(args.max_online_train_ms)
        if args.load_lora:
            self.load(args.load_lora)
        self.bg = None
        if self.threaded:
            self.shadow.copy_from(model)
            self.bg = BackgroundTrainer(model, self.trainer, self.buffer, args.dvi_batch_size, args.dvi_update_every,
                                        self.shadow)
        self.metrics = MetricsLogger(metrics_dir(args.metrics_out), max_k=args.steps,
                                     ar_ms_per_token=calibrate_ar_ms(model), every=args.metrics_every,
                                     print_fn=print_fn)

    # ------------------------------------------------------------------------------------------ the hook
    def on_block(self, blk: Block) -> None:
        t0 = now(self.model.device)
        d, v, a = blk.draft, blk.verification, blk.accepted
        # only self-drafted positions: an n-gram draft has no hk, and its token is not the drafter's choice
        learn = self.online and d.source == "self"  # deployed (not online): nothing to store
        n_push = a + (a < blk.drafted) if learn else 0
        for i in range(1, n_push + 1):
            self.push(hk=d.hk_state_of(i), token=d.tokens[i - 1], z_phi=v.logits[i - 1], reward=int(i <= a),
                      pos=i, is_first_reject=i > a)
        judged = blk.judged_declined  # the candidate the policy declined, judged by v_m for free
        if learn and judged is not None:
            m = blk.drafted
            self.push(hk=d.declined_hk.to(torch.float16), token=d.declined_token, z_phi=v.logits[m],
                      reward=int(judged), pos=m + 1, is_first_reject=not judged)
            n_push += 1
        if self.args.dvi_debug_hk:
            nbytes = n_push * self.model.config.hidden_size * 2
            self.print(f"[hk] block {self.global_step + 1}: {n_push} hk captured ({nbytes} B float16); "
                       f"buffer {self.buffer.size}/{self.buffer.capacity} slots")
        self.global_step += 1
        self.run_blocks += 1
        train_ms = bg_ms = 0.0
        if self.bg is not None:
            self.bg.on_block(self.global_step)
            self.bg.apply_published()  # at a block boundary, and only if the new weights are free right now
            for step, stats in self.bg.stats():
                bg_ms += stats["ms"]
                self._log_train(step, stats)
        elif self.online:
            self.budget.on_block()
            if (self.global_step % self.args.dvi_update_every == 0 and self.buffer.size >= self.args.dvi_batch_size
                    and self.budget.allow()):
                stats = self.trainer.step(self.buffer.sample(self.args.dvi_batch_size), self.global_step)
                train_ms = stats["ms"]
                self.budget.charge(train_ms)
                self._log_train(self.global_step, stats)
        if self.online and self.args.save_lora_every and self.global_step % self.args.save_lora_every == 0:
            self.save(checkpoint_path(self.args.save_lora_path, self.global_step))
        own_ms = (now(self.model.device) - t0) * 1e3
        wall = d.ms + v.ms + own_ms
        self.blocks_ms_total += wall
        self.metrics.log_block(self.global_step, blk.drafted, a, len(blk.committed), wall, d.ms, v.ms, train_ms,
                               decode_ms=wall - train_ms, bg_trainer_ms=bg_ms,
                               lora_version=self.bg.applied if self.bg else None)

    def _log_train(self, step: int, stats: dict) -> None:
        self.train_steps += 1
        self.train_ms_total += stats["ms"]
        self.metrics.log_train(step, stats)
        if stats["over_budget"] and self.bg is None:
            self.over_budget += 1
            if self.over_budget % 100 == 1:
                self.print(f"[dvi] trainer step took {stats['ms']:.1f} ms > --max-online-train-ms "
                           f"{self.args.max_online_train_ms}: the inline trainer now steps only as often as the "
                           f"budget allows ({self.budget.skipped} due steps skipped so far); --dvi-trainer thread "
                           "takes it off the decode loop")

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self, path, finished: bool = False) -> Path:
        if self.bg is not None:  # a consistent optimizer/LoRA pair: wait for the step in flight (checkpoints only)
            with self.bg.step_lock:
                self.bg.apply_published_blocking()
                return self._save(path, finished)
        return self._save(path, finished)

    def _save(self, path, finished: bool) -> Path:
        t = self.trainer
        save_ckpt(path, self.model, t.optimizer, t.schedule, t.ema_baseline, global_step=self.global_step,
                  extra={"train_steps": self.train_steps, "ablation": self.args.dvi_ablation, "finished": finished})
        return Path(path)

    def load(self, path) -> None:
        """Resume (online: optimizer, schedule, baseline and step count too) or deploy (LoRA tensors only)."""
        t = self.trainer
        if self.online:
            saved = (read_ckpt(path).get("extra") or {}).get("ablation")
            if saved is not None and saved != self.args.dvi_ablation:
                raise CheckpointError(f"checkpoint {path} was trained with --dvi-ablation {saved}, this run has "
                                      f"{self.args.dvi_ablation}: pass --dvi-ablation {saved} to resume it, or "
                                      "train a new drafter (another --save-lora-path)")
            t.ema_baseline = load_ckpt(path, self.model, t.optimizer, t.schedule)
            self.global_step = int(read_ckpt(path).get("global_step") or 0)
        else:
            load_ckpt(path, self.model, None, None)
        self.print(f"[dvi] loaded {path} ({'resume at block ' + str(self.global_step) if self.online else 'deploy'})")

    def finish(self, finished: bool = True) -> dict:
        """Save DIR/final.pt (online runs), close the metrics (CSVs + plot) and return a summary. An interrupted
        run saves too (so it can be resumed), with ``extra["finished"] = False`` in the checkpoint."""
        if self.bg is not None:
            self.bg.close()
            for step, stats in self.bg.stats():
                self._log_train(step, stats)
        out = {"blocks": self.global_step, "train_steps": self.train_steps, "over_budget_steps": self.over_budget,
               "budget_skipped_steps": self.budget.skipped, "trainer": "thread" if self.bg else "inline",
               "train_ms_per_step": self.train_ms_total / max(1, self.train_steps),
               "train_share_of_wall": self.train_ms_total / max(1e-9, self.blocks_ms_total)}
        if self.online and self.run_blocks:  # no block seen (no prompt left): no checkpoint from no data
            out["final"] = str(self.save(checkpoint_path(self.args.save_lora_path), finished))
        fl = self.metrics.first_last(50)
        out["first_50"], out["last_50"] = fl["first"], fl["last"]
        self.metrics.close()
        out["metrics"] = str(self.metrics.out_dir)
        return out
