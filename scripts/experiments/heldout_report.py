"""The report of the held-out-domain experiment: OUT/table.md, OUT/summary.json, OUT/heldout.png (the four cells)
and OUT/curves.png (the training run's rolling top1_agree and acc@1).

Cells: the drafter (untrained = the verifier's head on layer-k features, which is what the LoRA head starts as;
trained = the online run's final checkpoint) x the domain (held-in = questions of the training categories that the
training stream did not contain; held-out = the category it left out). The drafter is frozen in a cell, so its
stats are over all of the cell's blocks.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from evaluation.answers import answer_store
from common.cells import fmt
from evaluation.cli import fail
from scripts.experiments.plots import plot_bars, plot_panels
from scripts.experiments.report_files import meta_markdown, write_report
from scripts.experiments.series import load_metrics, segment_stats
from scripts.experiments.sweep_report import collect

DRAFTERS = ("untrained", "trained")
DOMAINS = ("held-in", "held-out")
COLUMNS = (("top1_agree", ".3f"), ("acc@1", ".3f"), ("mean_accepted", ".3f"), ("block_acc", ".3f"))
PNG, CURVES_PNG = "heldout.png", "curves.png"


def cell_name(drafter: str, domain: str) -> str:
    return f"{drafter}_{domain.replace('-', '')}"


def answered_categories(run_folder: Path) -> dict:
    """Questions answered per category (from the run's answers.jsonl)."""
    return dict(Counter(str(r.get("category")) for r in answer_store(run_folder / "answers.jsonl").records()))


def collect_cells(out: Path) -> dict:
    cells = {}
    for drafter in DRAFTERS:
        for domain in DOMAINS:
            name = cell_name(drafter, domain)
            m = load_metrics(out / name)
            if m is None:
                continue
            cats = answered_categories(out / name)
            cells[name] = {"drafter": drafter, "domain": domain, "questions": sum(cats.values()), "categories": cats,
                           "status": "done" if (out / name / "done.json").exists() else "partial",
                           **segment_stats(m.acceptance, m.speed)}
    return cells


def gains(cells: dict) -> dict:
    """Per domain: trained minus untrained, for each column (None where a cell or a value is missing)."""
    out = {}
    for domain in DOMAINS:
        a, b = cells.get(cell_name("untrained", domain)), cells.get(cell_name("trained", domain))
        out[domain] = {k: (b[k] - a[k] if a and b and a[k] is not None and b[k] is not None else None)
                       for k, _ in COLUMNS}
    return out


def table_markdown(cells: dict, train: dict | None, meta: dict) -> str:
    lines = meta_markdown("Held-out domain: the trained drafter on a category it never saw", meta)
    lines += ["Each cell decodes its questions with the drafter frozen (`--dvi-online false`), self-drafting with the "
              "threshold policy; stats over all of its blocks. top1_agree = share of blocks whose self-drafter "
              "top-1 equals the verifier's token (blocks where it is defined); acc@1 = share of blocks whose first "
              "draft was accepted; mean accepted = committed tokens per verifier pass; block_acc = mean "
              "accepted/drafted. untrained = the verifier's head on the layer-k features (the LoRA head at "
              "init); trained = OUT/train/checkpoints/final.pt.", "",
              "| drafter | domain | status | questions | categories | blocks | "
              + " | ".join(k for k, _ in COLUMNS) + " |", "|---|---|---|---:|---|---:|" + "---:|" * len(COLUMNS)]
    for c in cells.values():
        cats = ", ".join(f"{k} {v}" for k, v in c["categories"].items())
        lines.append(f"| {c['drafter']} | {c['domain']} | {c['status']} | {c['questions']} | {cats} | {c['blocks']} | "
                     + " | ".join(fmt(c[k], spec) for k, spec in COLUMNS) + " |")
    lines += ["", "Gain of the trained drafter (trained - untrained):", "",
              "| domain | " + " | ".join(k for k, _ in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for domain, g in gains(cells).items():
        lines.append(f"| {domain} | " + " | ".join(fmt(g[k], "+.3f") for k, _ in COLUMNS) + " |")
    if train:
        f, la = train["first"], train["last"]
        lines += ["", f"Training run (`train`, {train['status']}): {train['blocks']} blocks; top1_agree "
                      f"{fmt(f['top1_agree'])} in its first quarter, {fmt(la['top1_agree'])} in its last; acc@1 "
                      f"{fmt(f['acc@1'])} -> {fmt(la['acc@1'])}; mean accepted {fmt(f['mean_accepted'])} -> "
                      f"{fmt(la['mean_accepted'])}."]
    return "\n".join(lines) + "\n"


def build_heldout_report(out: Path, window: int, meta: dict) -> dict:
    cells = collect_cells(out)
    runs, panels = collect(out, {"train": "-"}, window)
    train = runs.get("train")
    if not cells and not train:
        fail(f"no run folder under {out} has metrics/acceptance.csv: run without --report-only first")
    bars = {k: {d: {dr: (cells.get(cell_name(dr, d)) or {}).get(k) for dr in DRAFTERS} for d in DOMAINS}
            for k in ("top1_agree", "mean_accepted")}
    plot_bars(bars, f"Held-out domain ({meta.get('held-out category', '?')}): untrained vs trained drafter",
              out / PNG)
    plot_panels(panels, window, "Held-out domain: the training run (online, held-in categories only)",
                out / CURVES_PNG)
    write_report(out, table_markdown(cells, train, meta),
                 {"meta": meta, "window": window, "cells": cells, "gains": gains(cells), "train": train})
    return cells
