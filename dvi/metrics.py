"""DVI run metrics: three CSVs flushed on every call (a crash keeps all logged rows), a summary line every N blocks,
and a progress plot at close.

    acceptance.csv  step,acc@1..acc@K,block_acc,drafted,accepted,committed,top1_agree
                    acc@i = 1 if accepted >= i, 0 if drafted >= i > accepted, empty if i > drafted (no evidence);
                    top1_agree = 1 if the self-drafter's top-1 for the block's first position equals the
                    verifier's v_0, drafted or declined alike (0 if not), empty if the drafter computed no
                    candidate (an n-gram block, a skipped goodput probe)
    speed.csv       step,wall_ms,speedup,drafter_ms,verifier_ms,trainer_ms,committed,decode_ms,bg_trainer_ms,
                    lora_version
                    speedup = committed * ar_ms_per_token / wall_ms (plain decoding time over block time);
                    trainer_ms = inline trainer time inside the block; decode_ms = wall_ms - trainer_ms;
                    bg_trainer_ms = time of background-thread trainer steps that finished during the block (not
                    part of wall_ms); lora_version = LoRA weights the decode thread drafts with
    trainer.csv     TRAIN_COLS, from the first log_train on (missing keys empty)
    prefill.csv     prompt,prompt_len,positions,logits_ms,push_ms (dense supervision from the prompt, from the first
                    log_prefill on): the verifier head over the scored prompt rows, and pushing their tuples

A new logger starts fresh files; files of an earlier run in the same folder are first moved, never deleted, to
``out_dir/previous_<time>/``. Aggregates over a window of blocks: acc@1 = share of blocks whose first draft was
accepted, mean accepted = mean committed tokens per block (tokens per verifier pass, the Spec-Bench convention),
block_acc = mean of the per-block accepted/drafted, top1_agree = mean over the blocks that have one,
speedup = sum(committed) * ar_ms / sum(wall_ms).
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from common.atomic import atomic_write
from common.errors import UserError

TRAIN_COLS = ("step", "loss", "kd", "rkl", "kd_top1", "ce", "pg", "entropy", "w_kl", "w_ce", "w_pg", "reward_mean",
              "baseline", "ms", "over_budget")
PLOT_LOSSES = ("loss", "kd", "ce", "pg")
FILES = ("acceptance.csv", "speed.csv", "trainer.csv", "prefill.csv", "dvi_progress.png")


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
    try:
        return int(s)
    except ValueError:
        return float(s)


def read_acceptance_csv(path) -> list[dict]:
    """Rows of acceptance.csv (or any of the CSVs here) as dicts of int/float, with empty cells as None."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metrics file {path} does not exist: pass acceptance.csv inside a --metrics-out folder")
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _show(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


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
        self.blocks: list[tuple] = []   # (step, drafted, accepted, committed, wall_ms, top1_agree or None)
        self.train: list[tuple] = []    # (step, *PLOT_LOSSES, ms)
        self._train_mark = 0            # trainer rows already summarised
        self._files = {}
        self._acc = self._open("acceptance.csv", ["step", *(f"acc@{i}" for i in range(1, max_k + 1)), "block_acc",
                                                  "drafted", "accepted", "committed", "top1_agree"])
        self._speed = self._open("speed.csv", ["step", "wall_ms", "speedup", "drafter_ms", "verifier_ms",
                                               "trainer_ms", "committed", "decode_ms", "bg_trainer_ms",
                                               "lora_version"])
        self._trainer = self._prefill = None
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
                  top1_agree: bool | None = None) -> None:
        if not 0 <= accepted <= drafted <= self.max_k:
            raise ValueError(f"block at step {step}: need 0 <= accepted ({accepted}) <= drafted ({drafted}) <= "
                             f"max_k ({self.max_k})")
        acc = [1 if accepted >= i else 0 if drafted >= i else None for i in range(1, self.max_k + 1)]
        block_acc = accepted / drafted if drafted else None
        speedup = committed * self.ar_ms / wall_ms if self.ar_ms is not None and wall_ms > 0 else None
        top1 = None if top1_agree is None else bool(top1_agree)
        self._acc.writerow([_fmt(x) for x in (step, *acc, block_acc, drafted, accepted, committed, top1)])
        self._speed.writerow([_fmt(x) for x in (step, float(wall_ms), speedup, float(drafter_ms), float(verifier_ms),
                                                float(trainer_ms), committed,
                                                float(wall_ms - trainer_ms if decode_ms is None else decode_ms),
                                                float(bg_trainer_ms), lora_version)])
        self._flush()
        self.blocks.append((step, drafted, accepted, committed, float(wall_ms), top1))
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
        r, f = self.rolling(self.every), _show
        line = (f"[dvi] step {r['step']} | last {r['blocks']} blocks: acc@1 {f(r['acc@1'])} mean accepted "
                f"{f(r['mean_accepted'])} block_acc {f(r['block_acc'])} top1_agree {f(r['top1_agree'])} "
                f"speedup {f(r['speedup'])}"
                + ("x" if r["speedup"] is not None else ""))
        rows = self.train[self._train_mark:]
        if rows:
            loss, kd, ms = (_mean([x[i] for x in rows if x[i] is not None]) for i in (1, 2, 5))
            line += f" | trainer loss {f(loss)} kd {f(kd, '.3g')} ({f(ms, '.1f')} ms/step, {len(rows)} steps)"
        return line

    def plot(self, png_path: str | Path | None = None, window: int | None = None) -> Path:
        """Top: rolling acc@1 and block_acc, mean accepted length on a twin axis. Bottom: trainer losses.
        The window defaults to 50 blocks, widened to 1/20 of the run (at most 500) so long runs are readable."""
        from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

        png = Path(png_path) if png_path is not None else self.out_dir / "dvi_progress.png"
        fig = Figure(figsize=(9, 7), constrained_layout=True)
        top, bot = fig.subplots(2, 1, sharex=True)
        w = window or min(500, max(50, len(self.blocks) // 20))
        if self.blocks:
            step, d, a, c, _ = (np.asarray(x, dtype=float) for x in zip(*(b[:5] for b in self.blocks)))
            tried = d > 0

            def roll(x):
                cs = np.concatenate([[0.0], np.cumsum(x)])
                i = np.arange(len(x))
                return cs[i + 1] - cs[np.maximum(0, i + 1 - w)]

            with np.errstate(invalid="ignore", divide="ignore"):
                n = roll(tried)
                top.plot(step, roll((a >= 1) & tried) / n, label="acc@1")
                top.plot(step, roll(np.where(tried, a / np.maximum(d, 1), 0.0)) / n, label="block_acc")
            top.set_ylim(-0.02, 1.02)
            twin = top.twinx()
            twin.plot(step, roll(c) / roll(np.ones_like(c)), color="tab:green", label="mean accepted length")
            twin.set_ylabel("tokens per verify (mean accepted length)")
            h1, l1 = top.get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            top.legend(h1 + h2, l1 + l2, loc="lower right")
        else:
            top.text(0.5, 0.5, "no blocks logged", ha="center", va="center", transform=top.transAxes)
        top.set_ylabel("acceptance")
        top.set_title(f"DVI online learning: rolling means over the last {w} blocks")
        if self.train:
            cols = list(zip(*self.train))
            for i, name in enumerate(PLOT_LOSSES, start=1):
                ys = np.array([np.nan if y is None else y for y in cols[i]], dtype=float)
                if not np.all(np.isnan(ys)):
                    bot.plot(cols[0], ys, label=name, lw=1)
            if bot.lines:
                bot.legend(loc="upper right")
        else:
            bot.text(0.5, 0.5, "no trainer steps (offline run)", ha="center", va="center", transform=bot.transAxes)
        bot.set_ylabel("trainer loss terms")
        bot.set_xlabel("global step (verify/commit blocks)")
        with atomic_write(png, "wb") as f:
            fig.savefig(f, dpi=100, format="png")
        return png

    def close(self) -> None:
        """Flush and close the CSVs, then write out_dir/dvi_progress.png. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for f in self._files.values():
            f.close()
        self.plot()
