"""dvi_progress.png: a run's blocks and trainer steps over time, rolling means over a window of blocks.

    acceptance   acc@1, block_acc (blocks that drafted) and top1_agree (blocks with a self-drafter candidate)
    speed        mean accepted length (tokens per verifier pass) and tokens/s against greedy decoding (speedup:
                 committed tokens * the measured greedy ms per token / block wall time; needs that calibration)
    trainer      the loss terms per step
    held-out     each trainable drafter on the fixed held-out set (``dvi/heldout.py``): top-1 agreement (solid) and
                 the teacher-forced accepted length (dashed) at each evaluation; the one learning curve that does not
                 depend on what drafted (top1_agree above is over the blocks the gate probed)

Every legend sits outside its axes, so no curve is hidden.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_write

LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8}


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Sum of the last ``w`` entries up to each index."""
    cs = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    return cs[i + 1] - cs[np.maximum(0, i + 1 - w)]


def _ratio(num: np.ndarray, den: np.ndarray, w: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return rolling_sum(num, w) / rolling_sum(den, w)


def _acceptance(ax, step, d, a, top1, w: int) -> None:
    tried, has_top1 = (d > 0).astype(float), ~np.isnan(top1)
    ax.plot(step, _ratio((a >= 1) * tried, tried, w), label="acc@1")
    ax.plot(step, _ratio(np.where(d > 0, a / np.maximum(d, 1), 0.0), tried, w), label="block_acc")
    ax.plot(step, _ratio(np.nan_to_num(top1), has_top1.astype(float), w), label="top1_agree\n(over probed blocks)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("acceptance")
    ax.legend(**LEGEND)


def _speed(ax, step, c, wall, ar_ms: float | None, w: int) -> None:
    ax.plot(step, _ratio(c, np.ones_like(c), w), color="tab:green", label="mean accepted length\n(tokens per pass)")
    if ar_ms is not None:
        ax.plot(step, _ratio(c * ar_ms, wall, w), color="tab:red", label="tokens/s vs greedy\n(speedup)")
    ax.axhline(1.0, ls="--", color="black", lw=0.8, label="greedy decoding")
    ax.set_ylabel("x greedy")
    ax.legend(**LEGEND)


def _trainer(ax, train: list[tuple], names: tuple[str, ...]) -> None:
    if not train:
        ax.text(0.5, 0.5, "no trainer steps (offline run)", ha="center", va="center", transform=ax.transAxes)
    else:
        cols = list(zip(*train))
        for i, name in enumerate(names, start=1):
            ys = np.array([np.nan if y is None else y for y in cols[i]], dtype=float)
            if not np.all(np.isnan(ys)):
                ax.plot(cols[0], ys, label=name, lw=1)
        if ax.lines:
            ax.legend(**LEGEND)
    ax.set_ylabel("trainer loss terms")


def _heldout(ax, rows: list) -> None:
    """``rows``: ``dvi.heldout_eval.HeldoutRow`` (step, drafter, top1, accept_len, n, ...)."""
    if not rows:
        ax.text(0.5, 0.5, "no held-out evaluation (--heldout-positions 0)", ha="center", va="center",
                transform=ax.transAxes)
    for i, d in enumerate(dict.fromkeys(r.drafter for r in rows)):
        mine = [r for r in rows if r.drafter == d]
        x, color = [r.step for r in mine], f"C{i}"
        ax.plot(x, [r.top1 for r in mine], "o-", color=color, ms=3, label=f"{d}: held-out top-1 agreement")
        ax.plot(x, [r.accept_len for r in mine], "s--", color=color, ms=3, label=f"{d}: held-out accepted length")
    if rows:
        ax.set_ylim(0, max(1.0, *(r.accept_len for r in rows)) * 1.05)
        ax.legend(**LEGEND)
    ax.set_ylabel(f"held-out set ({rows[-1].n if rows else 0} positions)")


def progress_figure(blocks: list[tuple], train: list[tuple], loss_names: tuple[str, ...], ar_ms: float | None,
                    window: int | None = None, heldout: list | None = None):
    """``blocks``: (step, drafted, accepted, committed, wall_ms, top1_agree or None, ...); ``train``: (step,
    *loss_names values, ...); ``heldout``: the held-out rows. The window defaults to 50 blocks, widened to 1/20 of
    the run (at most 500)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    fig = Figure(figsize=(10, 12), constrained_layout=True)
    acc, speed, trainer, held = fig.subplots(4, 1, sharex=True)
    w = window or min(500, max(50, len(blocks) // 20))
    if blocks:
        step, d, a, c, wall = (np.asarray(x, dtype=float) for x in zip(*(b[:5] for b in blocks)))
        top1 = np.array([np.nan if b[5] is None else float(b[5]) for b in blocks])
        _acceptance(acc, step, d, a, top1, w)
        _speed(speed, step, c, wall, ar_ms, w)
    else:
        for ax in (acc, speed):
            ax.text(0.5, 0.5, "no blocks logged", ha="center", va="center", transform=ax.transAxes)
    acc.set_title(f"DVI online learning: rolling means over the last {w} blocks")
    _trainer(trainer, train, loss_names)
    _heldout(held, heldout or [])
    held.set_xlabel("global step (verify/commit blocks)")
    return fig


def plot_progress(blocks: list[tuple], train: list[tuple], loss_names: tuple[str, ...], ar_ms: float | None,
                  png: Path, window: int | None = None, heldout: list | None = None) -> Path:
    """``progress_figure`` written to ``png``."""
    with atomic_write(png, "wb") as f:
        progress_figure(blocks, train, loss_names, ar_ms, window, heldout).savefig(f, dpi=100, format="png")
    return png
