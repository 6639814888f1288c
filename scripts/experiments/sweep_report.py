"""The report of a sweep (one online run per value of one flag): OUT/table.md, OUT/summary.json, OUT/curves.png.

Per run, the first and the last quarter of its blocks (``series.quarters``): top1_agree, acc@1, mean accepted,
tokens/s. With ``spread`` (seeds), rows with the mean ± sample std and the min-max over the runs follow, and the plot
draws the runs' mean and min-max band over their rolling curves.
"""
from __future__ import annotations

from pathlib import Path

from common.cells import fmt
from evaluation.cli import fail
from scripts.experiments.plots import plot_panels
from scripts.experiments.report_files import meta_markdown, write_report
from scripts.experiments.series import curve, load_metrics, quarters
from scripts.experiments.spread import spread

COLUMNS = (("top1_agree", ".3f"), ("acc@1", ".3f"), ("mean_accepted", ".3f"), ("tokens_per_s", ".1f"))
CURVES = ("top1_agree", "acc@1")
PNG = "curves.png"


def collect(out: Path, runs: dict[str, str], window: int) -> tuple[dict, dict]:
    """(per-run summaries, plot panels) of the runs ``{folder name: flag value}`` that have metrics."""
    summaries, panels = {}, {k: {} for k in CURVES}
    for name, value in runs.items():
        m = load_metrics(out / name)
        if m is None:
            continue
        summaries[name] = {"value": value, "status": "done" if (out / name / "done.json").exists() else "partial",
                           **quarters(m)}
        for k in CURVES:
            panels[k][name] = curve(m.acceptance, k, window)
    return summaries, panels


def spread_of(summaries: dict) -> dict:
    """Per quarter (first, last) and metric: the spread over the runs."""
    return {q: {k: spread([s[q][k] for s in summaries.values()]) for k, _ in COLUMNS} for q in ("first", "last")}


def _pm(s: dict, spec: str) -> str:
    return fmt(s["mean"], spec) + ("" if s["std"] is None else " ± " + fmt(s["std"], spec))


def _range(s: dict, spec: str) -> str:
    return "-" if s["min"] is None else f"{fmt(s['min'], spec)} – {fmt(s['max'], spec)}"


def table_markdown(title: str, flag: str, summaries: dict, meta: dict, spreads: dict | None) -> str:
    lines = meta_markdown(title, meta)
    lines += ["Per run: its first and its last quarter of blocks (25% each). top1_agree = share of blocks whose "
              "self-drafter top-1 at the first position equals the verifier's token, over the blocks where it is "
              "defined (n-gram blocks and skipped probes excluded); acc@1 = share of drafting blocks whose first draft "
              "was accepted; mean accepted = mean committed tokens per block (per verifier pass); tokens/s = committed "
              "tokens / block wall time (drafter + verifier + DVI hook and trainer). status `partial` = no done.json."
              + (" Spread rows: mean ± sample std (n - 1) and min – max over the runs." if spreads else ""), "",
              f"| run | {flag} | status | blocks | " + " | ".join(f"{k} first | {k} last" for k, _ in COLUMNS) + " |",
              "|---|---|---|---:|" + "---:|" * (2 * len(COLUMNS))]
    for name, s in summaries.items():
        cells = [f"{fmt(s['first'][k], spec)} | {fmt(s['last'][k], spec)}" for k, spec in COLUMNS]
        lines.append(f"| {name} | {s['value']} | {s['status']} | {s['blocks']} | " + " | ".join(cells) + " |")
    if spreads:
        for label, show in (("mean ± std", _pm), ("min – max", _range)):
            cells = [f"{show(spreads['first'][k], spec)} | {show(spreads['last'][k], spec)}" for k, spec in COLUMNS]
            lines.append(f"| **{label}** (n={len(summaries)}) | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_line(run: str, s: dict) -> str:
    f, la = s["first"], s["last"]
    return (f"{run}: last quarter ({la['blocks']} blocks) top1_agree {fmt(la['top1_agree'])} acc@1 {fmt(la['acc@1'])} "
            f"mean accepted {fmt(la['mean_accepted'])} (first quarter top1_agree {fmt(f['top1_agree'])})")


def build_sweep_report(out: Path, title: str, flag: str, runs: dict[str, str], window: int, meta: dict,
                       with_spread: bool) -> dict:
    summaries, panels = collect(out, runs, window)
    if not summaries:
        fail(f"no run folder under {out} has metrics/acceptance.csv: run without --report-only first")
    missing = [n for n in runs if n not in summaries]
    if missing:
        meta = {**meta, "not run (no acceptance.csv)": ", ".join(missing)}
    spreads = spread_of(summaries) if with_spread else None
    plot_panels(panels, window, title, out / PNG, bands=with_spread)
    write_report(out, table_markdown(title, flag, summaries, meta, spreads),
                 {"meta": meta, "window": window, "runs": summaries, **({"spread": spreads} if spreads else {})})
    return summaries
