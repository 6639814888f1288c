"""DVI run metrics: CSVs flushed on every call (a crash keeps all logged rows), a summary line every N blocks,
and at close the per-source table and the progress plot.

    acceptance.csv  step,acc@1..acc@K,block_acc,drafted,accepted,committed,top1_agree,source
                    acc@i = 1 if accepted >= i, 0 if drafted >= i > accepted, empty if i > drafted (no evidence);
                    top1_agree (over probed blocks) = 1 if the self-drafter's top-1 for the block's first position
                    equals the verifier's v_0, drafted or declined alike (0 if not), empty if the drafter computed no
                    candidate (a lookup's block, a probe the gate declined): its mean depends on which blocks were
                    probed, so it moves with the gate and the lookups (heldout.csv does not); source = the drafter
                    whose draft the block verified (ngram, memory, self), none for a plain greedy step (empty: not
                    given)
    speed.csv       step,wall_ms,speedup,drafter_ms,verifier_ms,trainer_ms,committed,decode_ms,bg_trainer_ms,
                    lora_version,source
                    speedup = committed * ar_ms_per_token / wall_ms (plain decoding time over block time);
                    trainer_ms = inline trainer time inside the block; decode_ms = wall_ms - trainer_ms;
                    bg_trainer_ms = time of background-thread trainer steps that finished during the block (not
                    part of wall_ms); lora_version = LoRA weights the decode thread drafts with
    sources.csv     at close, one row per draft source (kangaroo.drafters.counters.SOURCE_COLS): blocks, their
                    share, committed tokens per verifier pass, drafted/accepted/committed, calls (times the
                    drafter was asked; a chain asks in order until one drafts), draft_ms (all those calls),
                    verify_ms (its blocks), time_share (draft + verify ms of all sources)
    trainer.csv     TRAIN_COLS, from the first log_train on (missing keys empty)
    prefill.csv     prompt,prompt_len,positions,logits_ms,push_ms (dense supervision from the prompt, from the first
                    log_prefill on): the verifier head over the scored prompt rows, and pushing their tuples
    heldout.csv     step,trainer_steps,drafter,top1,accept_len,n,ms (from the first log_heldout on): each trainable
                    drafter on the fixed held-out set (``dvi/heldout.py``), at the start, every --heldout-every
                    trainer steps and at the end; top1 = share of the n positions where its top-1 is the verifier's
                    greedy token, accept_len = the teacher-forced accepted drafts from each position (at most the
                    drafter's steps), trainer_steps = the steps its weights had, ms = the evaluation's time

A new logger starts fresh files; files of an earlier run in the same folder are first moved, never deleted, to
``out_dir/previous_<time>/``. Aggregates over a window of blocks: acc@1 = share of blocks whose first draft was
accepted, mean accepted = mean committed tokens per block (tokens per verifier pass, the Spec-Bench convention),
block_acc = mean of the per-block accepted/drafted, top1_agree = mean over the blocks that have one,
speedup = sum(committed) * ar_ms / sum(wall_ms). The plot: ``dvi/progress_plot.py``.
"""
from __future__ import annotations

import csv
import os
import time
from functools import partial
from pathlib import Path

from common.atomic import atomic_write
from common.cells import fmt
from common.errors import UserError
from kangaroo.drafters.counters import SOURCE_COLS, DrafterCounters, source_rows, source_summary, tally

TRAIN_COLS = ("step", "loss", "kd", "rkl", "kd_top1", "ce", "pg", "entropy", "w_kl", "w_ce", "w_pg", "reward_mean",
              "baseline", "ms", "over_budget", "feature_loss", "feature_kd", "feature_kd_top1", "feature_ms")
PLOT_LOSSES = ("loss", "kd", "ce", "pg")
FILES = ("acceptance.csv", "speed.csv", "sources.csv", "trainer.csv", "prefill.csv", "heldout.csv", "dvi_progress.png")
HELDOUT_COLS = ("step", "trainer_steps", "drafter", "top1", "accept_len", "n", "ms")


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _num(s: str):
    if s == "":
        return None
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    return s  # the source column


def read_acceptance_csv(path) -> list[dict]:
    """Rows of acceptance.csv (or any of the CSVs here) as dicts of int/float (the source column: str), with empty
    cells as None."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metrics file {path} does not exist: pass acceptance.csv inside a --metrics-out folder")
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def heldout_ends(path) -> dict[str, dict]:
    """heldout.csv's first and last row per drafter: ``{drafter: {"start": row, "end": row}}`` ({} without the file)."""
    rows = read_acceptance_csv(path) if Path(path).is_file() else []
    return {d: {"start": next(r for r in rows if r["drafter"] == d), "end": [r for r in rows if r["drafter"] == d][-1]}
            for d in dict.fromkeys(r["drafter"] for r in rows)}


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def sources_line(blocks: list[tuple]) -> str:
    """`` | sources: self 50% x2.00, ngram 50% x6.00``: each draft source's share of ``blocks`` and its tokens per
    verifier pass ('' when the blocks carry no source)."""
    counters: dict[str, DrafterCounters] = {}
    for b in blocks:
        if b[6] is not None:
            counters.setdefault(b[6], DrafterCounters()).settle(b[1], b[2], b[3], 0.0)
    return " | sources: " + source_summary(counters) if counters else ""


def _archive(out_dir: Path) -> Path | None:
    old = [out_dir / n for n in FILES if (out_dir / n).exists()]
    if not old:
        return None
    base = out_dir / f"previous_{time.strftime('%Y%m%d-%H%M%S')}"
    dest, i = base, 1
    while dest.exists():
        dest, i = Path(f"{base}_{i}"), i + 1
    dest.mkdir()
    for p in old:
        os.replace(p, dest / p.name)
    return dest


class MetricsLogger:
    def __init__(self, out_dir: str | Path, max_k: int, ar_ms_per_token: float | None = None, every: int = 50,
                 print_fn=print):
        if max_k < 1 or every < 1:
            raise ValueError(f"max_k and every must be >= 1, got max_k={max_k}, every={every}")
        self.out_dir, self.max_k, self.ar_ms, self.every = Path(out_dir), max_k, ar_ms_per_token, every
        self.print = print_fn
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"--metrics-out {self.out_dir} is a file: pass a folder (the CSVs and plot go inside it)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        moved = _archive(self.out_dir)
        if moved:
            print_fn(f"[dvi] metrics: moved the previous run's files in {self.out_dir} to {moved}")
        self.blocks: list[tuple] = []   # (step, drafted, accepted, committed, wall_ms, top1_agree or None, source)
        self.sources: dict[str, DrafterCounters] = {}   # per draft source, over the run
        self.train: list[tuple] = []    # (step, *PLOT_LOSSES, ms)
        self._train_mark = 0            # trainer rows already summarised
        self._files = {}
        self._acc = self._open("acceptance.csv", ["step", *(f"acc@{i}" for i in range(1, max_k + 1)), "block_acc",
                                                  "drafted", "accepted", "committed", "top1_agree", "source"])
        self._speed = self._open("speed.csv", ["step", "wall_ms", "speedup", "drafter_ms", "verifier_ms",
                                               "trainer_ms", "committed", "decode_ms", "bg_trainer_ms",
                                               "lora_version", "source"])
        self.heldout: list = []         # dvi.heldout_eval.HeldoutRow, in order
        self._trainer = self._prefill = self._heldout = None
        self.closed = False

    def _open(self, name: str, header):
        f = open(self.out_dir / name, "w", newline="")
        self._files[name] = f
        w = csv.writer(f)
        w.writerow(header)
        f.flush()
        return w

    def _flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def log_block(self, step: int, drafted: int, accepted: int, committed: int, wall_ms: float, drafter_ms: float,
                  verifier_ms: float, trainer_ms: float = 0.0, decode_ms: float | None = None,
                  bg_trainer_ms: float = 0.0, lora_version: int | None = None,
                  top1_agree: bool | None = None, source: str | None = None,
                  asked_ms: dict[str, float] | None = None) -> None:
        """``source``: ``Block.source``; ``asked_ms``: ``Block.asked_ms`` (the drafters asked, and their ms)."""
        if not 0 <= accepted <= drafted <= self.max_k:
            raise ValueError(f"block at step {step}: need 0 <= accepted ({accepted}) <= drafted ({drafted}) <= "
                             f"max_k ({self.max_k})")
        acc = [1 if accepted >= i else 0 if drafted >= i else None for i in range(1, self.max_k + 1)]
        block_acc = accepted / drafted if drafted else None
        speedup = committed * self.ar_ms / wall_ms if self.ar_ms is not None and wall_ms > 0 else None
        top1 = None if top1_agree is None else bool(top1_agree)
        self._acc.writerow([_fmt(x) for x in (step, *acc, block_acc, drafted, accepted, committed, top1, source)])
        self._speed.writerow([_fmt(x) for x in (step, float(wall_ms), speedup, float(drafter_ms), float(verifier_ms),
                                                float(trainer_ms), committed,
                                                float(wall_ms - trainer_ms if decode_ms is None else decode_ms),
                                                float(bg_trainer_ms), lora_version, source)])
        self._flush()
        if source is not None:
            tally(self.sources, source, asked_ms or {source: drafter_ms}, drafted, accepted, committed, verifier_ms)
        self.blocks.append((step, drafted, accepted, committed, float(wall_ms), top1, source))
        if len(self.blocks) % self.every == 0:
            self.print(self.summary_line())
            self._train_mark = len(self.train)

    def log_train(self, step: int, stats: dict) -> None:
        if self._trainer is None:
            self._trainer = self._open("trainer.csv", TRAIN_COLS)
        self._trainer.writerow([_fmt(step)] + [_fmt(stats.get(k)) for k in TRAIN_COLS[1:]])
        self._flush()
        self.train.append((step, *(stats.get(k) for k in PLOT_LOSSES), stats.get("ms")))

    def log_prefill(self, prompt: int, prompt_len: int, positions: int, logits_ms: float, push_ms: float) -> None:
        if self._prefill is None:
            self._prefill = self._open("prefill.csv", ["prompt", "prompt_len", "positions", "logits_ms", "push_ms"])
        self._prefill.writerow([_fmt(x) for x in (prompt, prompt_len, positions, float(logits_ms), float(push_ms))])
        self._flush()

    def log_heldout(self, row) -> None:
        """A ``dvi.heldout_eval.HeldoutRow``: one drafter's evaluation on the held-out set."""
        if self._heldout is None:
            self._heldout = self._open("heldout.csv", HELDOUT_COLS)
        self._heldout.writerow([_fmt(getattr(row, k)) for k in HELDOUT_COLS])
        self._flush()
        self.heldout.append(row)

    def heldout_line(self) -> str:
        """`` | heldout self top1 0.31 len 0.52 @ 400 steps``: each drafter's newest held-out row ('' before one)."""
        newest = {r.drafter: r for r in self.heldout}
        return "".join(f" | heldout {d} top1 {r.top1:.3f} len {r.accept_len:.2f} @ {r.trainer_steps} steps"
                       for d, r in newest.items())

    def _stats(self, blocks) -> dict:
        tried = [b for b in blocks if b[1] > 0]
        wall = sum(b[4] for b in blocks)
        speedup = sum(b[3] for b in blocks) * self.ar_ms / wall if self.ar_ms is not None and wall > 0 else None
        return {"blocks": len(blocks), "step": blocks[-1][0] if blocks else None,
                "acc@1": _mean([float(b[2] >= 1) for b in tried]),
                "mean_accepted": _mean([b[3] for b in blocks]),
                "block_acc": _mean([b[2] / b[1] for b in tried]),
                "top1_agree": _mean([float(b[5]) for b in blocks if b[5] is not None]), "speedup": speedup}

    def rolling(self, window: int = 50) -> dict:
        """Stats of the last ``window`` blocks: blocks, step, acc@1, mean_accepted, block_acc, top1_agree, speedup
        (None if there is no evidence)."""
        return self._stats(self.blocks[-window:])

    def first_last(self, window: int = 50) -> dict:
        return {"first": self._stats(self.blocks[:window]), "last": self._stats(self.blocks[-window:])}

    def summary_line(self) -> str:
        """The last ``every`` blocks (those since the previous printed line) and the trainer steps since then."""
        r, f = self.rolling(self.every), partial(fmt, spec=".2f")
        line = (f"[dvi] step {r['step']} | last {r['blocks']} blocks: acc@1 {f(r['acc@1'])} mean accepted "
                f"{f(r['mean_accepted'])} block_acc {f(r['block_acc'])} top1_agree {f(r['top1_agree'])} "
                f"speedup {f(r['speedup'])}"
                + ("x" if r["speedup"] is not None else ""))
        line += sources_line(self.blocks[-self.every:]) + self.heldout_line()
        rows = self.train[self._train_mark:]
        if rows:
            loss, kd, ms = (_mean([x[i] for x in rows if x[i] is not None]) for i in (1, 2, 5))
            line += f" | trainer loss {f(loss)} kd {fmt(kd, '.3g')} ({fmt(ms, '.1f')} ms/step, {len(rows)} steps)"
        return line

    def plot(self, png_path: str | Path | None = None, window: int | None = None) -> Path:
        """dvi_progress.png (``dvi/progress_plot.py``): acceptance incl. top1_agree, tokens per pass and tokens/s
        against greedy, trainer losses, the held-out evaluations."""
        from dvi.progress_plot import plot_progress

        png = Path(png_path) if png_path is not None else self.out_dir / "dvi_progress.png"
        return plot_progress(self.blocks, self.train, PLOT_LOSSES, self.ar_ms, png, window, self.heldout)

    def write_sources(self) -> Path | None:
        """out_dir/sources.csv from the blocks logged with a source (None if there were none)."""
        if not self.sources:
            return None
        with atomic_write(self.out_dir / "sources.csv", "w") as f:
            w = csv.writer(f)
            w.writerow(SOURCE_COLS)
            w.writerows([_fmt(row[k]) for k in SOURCE_COLS] for row in source_rows(self.sources))
        return self.out_dir / "sources.csv"

    def close(self) -> None:
        """Flush and close the CSVs, write sources.csv and out_dir/dvi_progress.png. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for f in self._files.values():
            f.close()
        self.write_sources()
        self.plot()
