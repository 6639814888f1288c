"""DVI loss ablations (work plan step 11): one online run per preset on identical data, then one plot and one table.

    python -m scripts.experiments ablations --model-id smollm2-135m --prompts-jsonl assets/sharegpt.jsonl \\
        --max-prompts 300 --max-new-tokens 32 --out runs/ablations [--presets full,kd_only] [--num-threads 1] \\
        [any other evaluation.inference_kangaroo flag, e.g. --dvi-update-every 4, passed to every preset]

Each preset (full, kd_only, ce_only, pg_only, kd+ce, kd+pg) runs the online DVI driver in-process
(``evaluation.inference_kangaroo.main``) with the same prompts, seed, cadence and flags; only --dvi-ablation and
the output paths differ: OUT/PRESET/{metrics/, checkpoints/final.pt, answers.jsonl, done.json}.

Runs, resume and report parts are those of every experiment of this package (runner.py, series.py, plots.py,
report_files.py). Resume: a preset is skipped when its done.json (written only after the driver returned
normally), final.pt and metrics/acceptance.csv exist and done.json records the same driver command; a finished
preset run with other settings is refused (pass --overwrite or another --out). An interrupted preset restarts from
scratch (the driver saves final.pt even when interrupted, so final.pt alone does not mean finished).

Report: OUT/ablation_acceptance.png (rolling acc@1 over the global step, one curve per preset) and OUT/table.md
(per preset, over the last --window blocks, with the first window beside it: acc@1, mean accepted length = mean
committed tokens per block, block_acc, tokens/s = sum committed / sum wall seconds from speed.csv), plus
OUT/summary.json and OUT/command.txt. --report-only rebuilds them from the existing folders without running anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

from common.cells import fmt
from dvi.presets import PRESETS
from evaluation.cli import OneLineParser, fail
from scripts.experiments.cli import add_common_args, check_common, names_list
from scripts.experiments.plots import plot_panels
from scripts.experiments.prompt_stream import run_stream
from scripts.experiments.report_files import ENTRY, command_line, meta_markdown, write_report
from scripts.experiments.runner import LAYOUT_FLAGS, Variant
from scripts.experiments.series import curve, load_metrics, segment_stats

ABLATIONS = tuple(PRESETS)

# flags this script sets per preset: passing them through would break the comparison or the layout
OWNED = ("--dvi-ablation", *LAYOUT_FLAGS)


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=f"{ENTRY} ablations", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default=None,
                   help="as for evaluation.inference_kangaroo (required unless --report-only)")
    p.add_argument("--prompts-jsonl", default=None, help="ShareGPT jsonl (required unless --report-only)")
    p.add_argument("--presets", default=",".join(ABLATIONS), help="comma-separated subset of " + ",".join(ABLATIONS))
    add_common_args(p, out="runs/ablations", max_prompts=300)
    return p


def parse_args(argv):
    args, extra = build_parser().parse_known_args(argv)
    args.presets = names_list(args.presets, "--presets", ABLATIONS)
    check_common(args, extra, OWNED, "the ablations experiment", needs=("model_id", "prompts_jsonl"))
    args.extra = extra
    return args


# ----------------------------------------------------------------------------------------------- running
def preset_variant(preset: str) -> Variant:
    return Variant(preset, ("--dvi-online", "true", "--dvi-ablation", preset))


# ----------------------------------------------------------------------------------------------- report (pure)
def acc1_curve(acc_rows: list[dict], window: int) -> tuple[list, list]:
    """(global steps, rolling acc@1) of one preset's acceptance.csv rows."""
    return curve(acc_rows, "acc@1", window)


def preset_summary(acc_rows: list[dict], speed_rows: list[dict], window: int) -> dict:
    return {"blocks": len(acc_rows), "first": segment_stats(acc_rows[:window], speed_rows[:window]),
            "last": segment_stats(acc_rows[-window:], speed_rows[-window:])}


COLUMNS = (("acc@1", ".3f"), ("mean_accepted", ".3f"), ("block_acc", ".3f"), ("tokens_per_s", ".1f"))


def table_markdown(summaries: dict, window: int, meta: dict) -> str:
    """One row per preset: the last ``window`` blocks, each beside its first-window value."""
    lines = meta_markdown("DVI loss ablations", meta)
    lines += [f"End state = the last {window} blocks of each run; `first` = its first {window} blocks (the two "
              f"overlap when a run has fewer than {2 * window} blocks). acc@1 = share of blocks whose first draft "
              "was accepted; mean accepted length = mean committed tokens per block (per verifier pass); block_acc "
              "= mean accepted/drafted; tokens/s = committed tokens / block wall time (drafter + verifier + DVI "
              "hook and trainer), from speed.csv. status `partial` = no done.json (interrupted, or not run here).", "",
              "| preset | status | blocks | acc@1 | first | mean accepted length | first | block_acc | first "
              "| tokens/s | first |", "|---|---|---:|" + "---:|" * 8]
    for preset, s in summaries.items():
        cells = [f"{fmt(s['last'][k], spec)} | {fmt(s['first'][k], spec)}" for k, spec in COLUMNS]
        lines.append(f"| {preset} | {s.get('status', '-')} | {s['blocks']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, window: int, png) -> Path:
    """Rolling acc@1 over the global step, one line per preset."""
    return plot_panels({"acc@1": curves}, window, "DVI loss ablations: first-draft acceptance while learning online",
                       png)


# ----------------------------------------------------------------------------------------------- report (files)
def build_report(out: Path, presets: list[str], window: int, meta: dict) -> dict:
    summaries, curves, missing = {}, {}, []
    for preset in presets:
        m = load_metrics(out / preset)
        if m is None:
            missing.append(preset)
            continue
        summaries[preset] = preset_summary(m.acceptance, m.speed, window)
        summaries[preset]["status"] = "done" if (out / preset / "done.json").exists() else "partial"
        curves[preset] = acc1_curve(m.acceptance, window)
    if not summaries:
        fail(f"no preset folder under {out} has metrics/acceptance.csv: run without --report-only first")
    if missing:
        meta = {**meta, "not run (no acceptance.csv)": ", ".join(missing)}
    plot_curves(curves, window, out / "ablation_acceptance.png")
    write_report(out, table_markdown(summaries, window, meta), {"meta": meta, "window": window, "presets": summaries})
    return summaries


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    meta = run_stream(args, command_line("ablations", argv), "ablations",
                      [preset_variant(p) for p in args.presets],
                      {"out": str(out), "window": args.window, "presets": ",".join(args.presets)})
    summaries = build_report(out, args.presets, args.window, meta)
    for preset, s in summaries.items():
        print(f"[ablations] {preset}: last {s['last']['blocks']} blocks acc@1 {fmt(s['last']['acc@1'])} (first "
              f"{fmt(s['first']['acc@1'])}), mean accepted {fmt(s['last']['mean_accepted'])}, tokens/s "
              f"{fmt(s['last']['tokens_per_s'], '.1f')}")
    print(f"[ablations] {out / 'table.md'}, {out / 'ablation_acceptance.png'}")
    return 0
