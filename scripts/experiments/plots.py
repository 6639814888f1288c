"""The report plots: rolling curves per run (optionally with their mean and min-max band) and grouped bars.

Matplotlib's Figure only (no pyplot: no global backend, no GUI)."""
from __future__ import annotations

from pathlib import Path

Curve = tuple[list, list]   # (global steps, values; None where undefined)


def _save(fig, png) -> Path:
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png


def _zoom(ax, values) -> None:
    """Acceptance of a small model sits near 0: the y axis stops a little above the highest value."""
    top = max((y for y in values if y is not None), default=1.0)
    ax.set_ylim(0.0, min(1.0, max(0.05, 1.2 * top)))


def plot_panels(panels: dict[str, dict[str, Curve]], window: int, title: str, png, bands: bool = False) -> Path:
    """One panel per metric (its rolling mean over ``window`` blocks), one line per run. ``bands``: runs as thin
    lines, their mean (at each step, over the runs that reach it) bold, and the min-max band shaded."""
    import numpy as np
    from matplotlib.figure import Figure

    from scripts.experiments.spread import band

    nan = lambda ys: [np.nan if y is None else y for y in ys]  # noqa: E731
    fig = Figure(figsize=(9, 1.2 + 3.6 * max(1, len(panels))), constrained_layout=True)
    axes = fig.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
    for ax, (metric, curves) in zip(axes, panels.items()):
        for name, (steps, ys) in curves.items():
            ax.plot(steps, nan(ys), label=name, lw=0.8 if bands else 1.2, alpha=0.45 if bands else 1.0)
        if bands and curves:
            steps, mid, lo, hi = band(list(curves.values()))
            ax.fill_between(steps, lo, hi, color="grey", alpha=0.25, label=f"min-max of {len(curves)}")
            ax.plot(steps, mid, color="black", lw=1.8, label=f"mean of {len(curves)}")
        if not curves:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        _zoom(ax, [y for _, ys in curves.values() for y in ys])
        ax.grid(alpha=0.3)
        ax.set_ylabel(f"{metric} (rolling mean, {window} blocks)")
    if not panels:
        axes[0].text(0.5, 0.5, "no runs", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("global step (verify/commit blocks)")
    axes[0].set_title(title)
    return _save(fig, png)


def plot_bars(panels: dict[str, dict[str, dict[str, float | None]]], title: str, png) -> Path:
    """One panel per metric; in it one group of bars per group name, one bar per series name.
    ``panels[metric][group][series]`` is the bar's height (None: no bar)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + 3.2 * max(1, len(panels))), constrained_layout=True)
    axes = fig.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
    for ax, (metric, groups) in zip(axes, panels.items()):
        series = list(dict.fromkeys(s for g in groups.values() for s in g))
        x, width = np.arange(len(groups)), 0.8 / max(1, len(series))
        for i, s in enumerate(series):
            ys = [groups[g].get(s) for g in groups]
            bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, [np.nan if y is None else y for y in ys], width,
                          label=s)
            ax.bar_label(bars, labels=["-" if y is None else f"{y:.3f}" for y in ys], fontsize=8)
        ax.set_xticks(x, list(groups))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, axis="y")
        if series:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[0].set_title(title)
    return _save(fig, png)
