"""DVI loss ablations (work plan step 11): one online run per preset on identical data, then one plot and one table.

    python -m scripts.run_ablations --model-id smollm2-135m --prompts-jsonl assets/sharegpt.jsonl \\
        --max-prompts 300 --max-new-tokens 32 --out runs/ablations [--presets full,kd_only] [--num-threads 1] \\
        [any other evaluation.inference_kangaroo flag, e.g. --dvi-update-every 4, passed to every preset]

Each preset (full, kd_only, ce_only, pg_only, kd+ce, kd+pg) runs the online DVI driver in-process
(``evaluation.inference_kangaroo.main``) with the same prompts, seed, cadence and flags; only --dvi-ablation and
the output paths differ: OUT/PRESET/{metrics/, checkpoints/final.pt, answers.jsonl, done.json}.

Resume: a preset is skipped when its done.json (written only after the driver returned normally), final.pt and
metrics/acceptance.csv exist and done.json records the same driver command; a finished preset run with other
settings is refused (pass --overwrite or another --out). An interrupted preset restarts from scratch (the driver
saves final.pt even when interrupted, so final.pt alone does not mean finished).

Report: OUT/ablation_acceptance.png (rolling acc@1 over the global step, one curve per preset) and OUT/table.md
(per preset, over the last --window blocks, with the first window beside it: acc@1, mean accepted length = mean
committed tokens per block, block_acc, tokens/s = sum committed / sum wall seconds from speed.csv), plus
OUT/summary.json. --report-only rebuilds them from the existing folders without running anything.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from dvi.presets import PRESETS
from evaluation.cli import OneLineParser, fail, run_main

ABLATIONS = tuple(PRESETS)

# flags this script sets per preset: passing them through would break the comparison or the layout
OWNED = ("--dvi-ablation", "--dvi-online", "--metrics-out", "--save-lora-path", "--answer-file", "--overwrite",
         "--load-lora", "--question-file", "--model-path")


def build_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default=None, help="as for evaluation.inference_kangaroo (required unless --report-only)")
    p.add_argument("--prompts-jsonl", default=None, help="ShareGPT jsonl (required unless --report-only)")
    p.add_argument("--max-prompts", type=int, default=300)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--presets", default=",".join(ABLATIONS), help="comma-separated subset of " + ",".join(ABLATIONS))
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--window", type=int, default=200, help="blocks per rolling window (plot and table)")
    p.add_argument("--overwrite", action="store_true", help="rerun presets that already finished")
    p.add_argument("--report-only", action="store_true", help="only rebuild the plot and table from OUT")
    return p


def parse_args(argv):
    args, extra = build_parser().parse_known_args(argv)
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    bad = [s for s in presets if s not in ABLATIONS]
    if bad or not presets:
        fail(f"--presets: unknown {', '.join(bad) or '(none given)'}; pick from {','.join(ABLATIONS)}")
    args.presets = list(dict.fromkeys(presets))
    if args.window < 1:
        fail("--window must be >= 1")
    owned = [a.split("=")[0] for a in extra if a.split("=")[0] in OWNED]
    if owned:
        fail(f"{owned[0]} is set by run_ablations for every preset: leave it out")
    if not args.report_only:
        if not args.model_id or not args.prompts_jsonl:
            fail("--model-id and --prompts-jsonl are required (or pass --report-only to rebuild the report)")
        if args.max_prompts < 1 or args.max_new_tokens < 1:
            fail("--max-prompts and --max-new-tokens must be >= 1")
    args.extra = extra
    return args


# ----------------------------------------------------------------------------------------------- running
def preset_argv(args, preset: str) -> list[str]:
    d = Path(args.out) / preset
    argv = ["--model-id", args.model_id, "--prompts-jsonl", args.prompts_jsonl, "--max-prompts",
            str(args.max_prompts), "--max-new-tokens", str(args.max_new_tokens), "--dvi-online", "true",
            "--dvi-ablation", preset, "--metrics-out", str(d / "metrics"), "--save-lora-path", str(d / "checkpoints"),
            "--answer-file", str(d / "answers.jsonl"), "--overwrite", "--no-progress"]
    if args.num_threads is not None:
        argv += ["--num-threads", str(args.num_threads)]
    return argv + list(args.extra)


def finished(folder: Path) -> dict | None:
    """done.json of a preset that ran to the end (None otherwise)."""
    need = (folder / "done.json", folder / "checkpoints" / "final.pt", folder / "metrics" / "acceptance.csv")
    return json.loads(need[0].read_text()) if all(p.exists() for p in need) else None


def run_preset(args, preset: str) -> None:
    from evaluation import inference_kangaroo

    folder, argv = Path(args.out) / preset, preset_argv(args, preset)
    done = finished(folder)
    if done and not args.overwrite:
        if done.get("argv") == argv:
            print(f"[ablations] {preset}: finished earlier, skipped")
            return
        fail(f"{folder} finished with other settings (driver command {shlex.join(done.get('argv', []))}): "
             "pass --overwrite or another --out")
    (folder / "done.json").unlink(missing_ok=True)
    print(f"[ablations] {preset}: python -m evaluation.inference_kangaroo {shlex.join(argv)}", flush=True)
    t0 = time.time()
    rc = inference_kangaroo.main(argv)
    if rc:
        fail(f"preset {preset} ended with exit code {rc}: see the messages above")
    (folder / "done.json").write_text(json.dumps({"argv": argv, "seconds": time.time() - t0}, indent=2))


# ----------------------------------------------------------------------------------------------- report (pure)
def rolling_mean(values: list, window: int) -> list:
    """Trailing mean over the last ``window`` entries, ignoring None (None where the window holds no value)."""
    out, s, n = [], 0.0, 0
    for i, v in enumerate(values):
        if v is not None:
            s, n = s + v, n + 1
        if i >= window and values[i - window] is not None:
            s, n = s - values[i - window], n - 1
        out.append(s / n if n else None)
    return out


def acc1_curve(acc_rows: list[dict], window: int) -> tuple[list, list]:
    """(global steps, rolling acc@1) of one preset's acceptance.csv rows."""
    return [r["step"] for r in acc_rows], rolling_mean([r["acc@1"] for r in acc_rows], window)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def window_stats(acc_rows: list[dict], speed_rows: list[dict]) -> dict:
    """acc@1, mean accepted length (mean committed), block_acc and tokens/s over the given blocks."""
    wall_s = sum(r["wall_ms"] for r in speed_rows) / 1000
    return {"blocks": len(acc_rows), "acc@1": _mean([r["acc@1"] for r in acc_rows]),
            "mean_accepted": _mean([r["committed"] for r in acc_rows]),
            "block_acc": _mean([r["block_acc"] for r in acc_rows]),
            "tokens_per_s": sum(r["committed"] for r in speed_rows) / wall_s if wall_s > 0 else None}


def preset_summary(acc_rows: list[dict], speed_rows: list[dict], window: int) -> dict:
    return {"blocks": len(acc_rows), "first": window_stats(acc_rows[:window], speed_rows[:window]),
            "last": window_stats(acc_rows[-window:], speed_rows[-window:])}


def _f(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


COLUMNS = (("acc@1", ".3f"), ("mean_accepted", ".3f"), ("block_acc", ".3f"), ("tokens_per_s", ".1f"))


def table_markdown(summaries: dict, window: int, meta: dict) -> str:
    """One row per preset: the last ``window`` blocks, each beside its first-window value."""
    lines = ["# DVI loss ablations", ""] + [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
    lines += [f"- command: `{meta.get('command', '')}`", "",
              f"End state = the last {window} blocks of each run; `first` = its first {window} blocks (the two "
              f"overlap when a run has fewer than {2 * window} blocks). acc@1 = share of blocks whose first draft "
              "was accepted; mean accepted length = mean committed tokens per block (per verifier pass); block_acc "
              "= mean accepted/drafted; tokens/s = committed tokens / block wall time (drafter + verifier + DVI "
              "hook and trainer), from speed.csv. status `partial` = no done.json (interrupted, or not run here).", "",
              "| preset | status | blocks | acc@1 | first | mean accepted length | first | block_acc | first "
              "| tokens/s | first |", "|---|---|---:|" + "---:|" * 8]
    for preset, s in summaries.items():
        cells = [f"{_f(s['last'][k], spec)} | {_f(s['first'][k], spec)}" for k, spec in COLUMNS]
        lines.append(f"| {preset} | {s.get('status', '-')} | {s['blocks']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, window: int, png) -> Path:
    """Rolling acc@1 over the global step, one line per preset."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    fig = Figure(figsize=(9, 4.8), constrained_layout=True)
    ax = fig.subplots()
    for preset, (steps, ys) in curves.items():
        ax.plot(steps, [np.nan if y is None else y for y in ys], label=preset, lw=1.2)
    if not curves:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top = max((y for _, ys in curves.values() for y in ys if y is not None), default=1.0)
    ax.set_ylim(0.0, min(1.0, max(0.05, 1.2 * top)))  # acceptance of a small model sits near 0: zoom in
    ax.grid(alpha=0.3)
    ax.set_xlabel("global step (verify/commit blocks)")
    ax.set_ylabel(f"acc@1 (rolling mean, {window} blocks)")
    ax.set_title("DVI loss ablations: first-draft acceptance while learning online")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png


# ----------------------------------------------------------------------------------------------- report (files)
def load_preset(folder: Path):
    """(acceptance rows, speed rows) of OUT/PRESET/metrics, or None if the preset has no acceptance.csv."""
    from dvi.metrics import read_acceptance_csv

    m = folder / "metrics"
    if not (m / "acceptance.csv").is_file():
        return None
    speed = read_acceptance_csv(m / "speed.csv") if (m / "speed.csv").is_file() else []
    return read_acceptance_csv(m / "acceptance.csv"), speed


def build_report(out: Path, presets: list[str], window: int, meta: dict) -> dict:
    summaries, curves, missing = {}, {}, []
    for preset in presets:
        data = load_preset(out / preset)
        if data is None:
            missing.append(preset)
            continue
        acc, speed = data
        summaries[preset] = preset_summary(acc, speed, window)
        summaries[preset]["status"] = "done" if (out / preset / "done.json").exists() else "partial"
        curves[preset] = acc1_curve(acc, window)
    if not summaries:
        fail(f"no preset folder under {out} has metrics/acceptance.csv: run without --report-only first")
    if missing:
        meta = {**meta, "not run (no acceptance.csv)": ", ".join(missing)}
    (out / "table.md").write_text(table_markdown(summaries, window, meta))
    plot_curves(curves, window, out / "ablation_acceptance.png")
    (out / "summary.json").write_text(json.dumps({"meta": meta, "window": window, "presets": summaries}, indent=2))
    return summaries


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        if args.num_threads is not None:
            import torch

            torch.set_num_threads(args.num_threads)
        for i, preset in enumerate(args.presets, 1):
            print(f"[ablations] preset {i}/{len(args.presets)}: {preset}", flush=True)
            run_preset(args, preset)
    meta = {"out": str(out), "window": args.window, "presets": ",".join(args.presets),
            "command": shlex.join(["python", "-m", "scripts.run_ablations", *argv])}
    previous = out / "summary.json"
    if args.report_only and previous.exists():  # keep the command and data of the run that made the folders
        made = json.loads(previous.read_text()).get("meta", {})
        if "command" in made:
            meta["report"] = meta["command"]
        meta.update({k: made[k] for k in ("command", "data") if k in made})
    if not args.report_only:
        meta["data"] = (f"{args.prompts_jsonl}, first {args.max_prompts} prompts, max new tokens "
                        f"{args.max_new_tokens}, model {args.model_id}, extra flags: {shlex.join(args.extra) or 'none'}")
    summaries = build_report(out, args.presets, args.window, meta)
    for preset, s in summaries.items():
        print(f"[ablations] {preset}: last {s['last']['blocks']} blocks acc@1 {_f(s['last']['acc@1'])} (first "
              f"{_f(s['first']['acc@1'])}), mean accepted {_f(s['last']['mean_accepted'])}, tokens/s "
              f"{_f(s['last']['tokens_per_s'], '.1f')}")
    print(f"[ablations] {out / 'table.md'}, {out / 'ablation_acceptance.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
