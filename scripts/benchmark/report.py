"""The report, pure: records -> per-category and overall stats -> OUT/table.md, OUT/summary.json, OUT/speedup.png."""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text

def method_stats(records: list[dict], method: str) -> dict:
    rows = [r["methods"][method] for r in records if method in r["methods"]]
    tokens = sum(sum(x["new_tokens"]) for x in rows)
    wall = sum(sum(x["wall_s"]) for x in rows)
    passes = [p for x in rows for p in x["passes"]]
    n_pass = None if not passes or any(p is None for p in passes) else sum(passes)
    return {"questions": len(rows), "new_tokens": tokens, "wall_s": wall, "verifier_passes": n_pass,
            "mean_accepted": tokens / n_pass if n_pass else None,
            "tokens_per_s": tokens / wall if wall > 0 else None,
            "mismatches": sum(not all(x["match"]) for x in rows)}


def summarize(records: list[dict], methods: list[str]) -> dict:
    """Per category (first-seen order) and overall: per-method stats, speedup = tokens/s over the baseline's."""
    cats = list(dict.fromkeys(r["category"] for r in records))
    groups = {c: [r for r in records if r["category"] == c] for c in cats}
    groups["overall"] = records
    by_group = {}
    for g, recs in groups.items():
        stats = {m: method_stats(recs, m) for m in methods}
        base = stats["baseline"]["tokens_per_s"]
        for s in stats.values():
            s["speedup"] = s["tokens_per_s"] / base if s["tokens_per_s"] is not None and base else None
        by_group[g] = stats
    return {"methods": list(methods), "groups": list(groups), "by_group": by_group,
            "lossless": all(s["mismatches"] == 0 for s in by_group["overall"].values())}


def fmt(x, spec: str) -> str:
    """``x`` formatted, or n/a for a stat that does not exist (no passes counted, no time)."""
    return "n/a" if x is None else format(x, spec)


def match_cell(s: dict) -> str:
    return "yes" if s["mismatches"] == 0 else f"NO ({s['mismatches']} of {s['questions']})"


def matrix_markdown(summary: dict, key: str, spec: str, suffix: str = "") -> str:
    """One row per group (categories, then overall), one column per method: ``key`` of each method's stats."""
    methods = summary["methods"]
    lines = ["| category | questions | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for g in summary["groups"]:
        stats = summary["by_group"][g]
        cells = [fmt(stats[m][key], spec) + (suffix if stats[m][key] is not None else "") for m in methods]
        name = f"**{g}**" if g == "overall" else g
        lines.append(f"| {name} | {stats['baseline']['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_markdown(summary: dict, meta: dict) -> str:
    lines = ["# Method comparison (greedy, lossless)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
    lines += [f"- command: `{meta.get('command', '')}`", "",
              "Notes: mean accepted length = new tokens / verifier passes (target-model forward passes that emit "
              "tokens: 1.0 for plain decoding). Ours count them exactly; for HF methods a forward hook counts every "
              "call of the target model, the first (prompt) call included since it already emits the first token, "
              "and early_exit_assist's drafting calls (the same model cut to the exit layer) are told apart by the "
              "layer count and not counted. tokens/s = all new tokens / all wall seconds of the group (prefill "
              "included). speedup = tokens/s over the baseline's in the same run. matches baseline: `NO (k of n)` "
              "= k of n questions have a turn whose token ids differ from the baseline's.", "",
              "## Speedup over the baseline (tokens/s ratio, same run)", "",
              matrix_markdown(summary, "speedup", ".2f", "x"), "",
              "## Mean accepted length (tokens per target-model pass)", "",
              matrix_markdown(summary, "mean_accepted", ".2f"), "",
              "Every method matched the baseline on every question." if summary["lossless"] else
              "**Some method's output differed from the baseline's: see `matches baseline` below.**", ""]
    for g in summary["groups"]:
        stats = summary["by_group"][g]
        n = stats["baseline"]["questions"]
        lines += [f"## {g} ({n} questions)", "",
                  "| method | new tokens | mean accepted length | tokens/s | speedup | matches baseline |",
                  "|---|---:|---:|---:|---:|---|"]
        for m in summary["methods"]:
            s = stats[m]
            lines.append(f"| {m} | {s['new_tokens']} | {fmt(s['mean_accepted'], '.2f')} | "
                         f"{fmt(s['tokens_per_s'], '.2f')} | {fmt(s['speedup'], '.2f')}x | {match_cell(s)} |")
        lines.append("")
    return "\n".join(lines)


def plot_speedup(summary: dict, png) -> Path:
    """Grouped bars: one group per category (and overall), one bar per method, speedup over the baseline."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    groups, methods = summary["groups"], summary["methods"]
    x, width = np.arange(len(groups)), 0.8 / len(methods)
    fig = Figure(figsize=(max(7.0, 1.1 * len(groups) + 3), 4.5), constrained_layout=True)
    ax = fig.subplots()
    for j, m in enumerate(methods):
        ys = [summary["by_group"][g][m]["speedup"] for g in groups]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, [np.nan if y is None else y for y in ys], width, label=m)
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel("speedup over baseline (tokens/s ratio)")
    ax.set_title("Greedy decoding methods vs our baseline")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png


def write_report(out: Path, records: list[dict], methods: list[str], meta: dict) -> dict:
    summary = summarize(records, methods)
    atomic_write_text(out / "table.md", table_markdown(summary, meta))
    atomic_write_text(out / "summary.json", json.dumps({"meta": meta, **summary}, indent=2))
    plot_speedup(summary, out / "speedup.png")
    return summary
