"""The report, pure: each repeat's records -> per-category and overall stats -> OUT/table.md, OUT/summary.json,
OUT/speedup.png. Speeds, speedups and mean accepted lengths are computed as Spec-Bench's speed.py computes them,
on the answer records the benchmark writes (``scripts/benchmark/spec_bench.py``), as mean +- std over repeats."""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from common.cells import fmt
from scripts.benchmark import spec_bench as sb
from scripts.benchmark.sources import sources_markdown, sources_summary


def in_group(records: list[dict], group: str) -> list[dict]:
    return records if group == "overall" else [r for r in records if r["category"] == group]


def method_stats(runs: list[list[dict]], method: str) -> dict:
    """``runs``: each repeat's records (of one group). Token and pass counts over all repeats; speeds as speed.py,
    per repeat, then mean and std; mismatches: questions whose token ids differed from the baseline's in some repeat;
    ``equal_py``: equal.py's verdict (answer texts) in every repeat."""
    rows = [r["methods"][method] for recs in runs for r in recs if method in r["methods"]]
    tokens = sum(sum(x["new_tokens"]) for x in rows)
    passes = [p for x in rows for p in x["passes"]]
    n_pass = None if not passes or any(p is None for p in passes) else sum(passes)
    answers = [(sb.from_raw(recs, method), sb.from_raw(recs, "baseline")) for recs in runs]
    rep = sb.mean_report([sb.speed(a, base) for a, base in answers])
    listed = rows and all(x.get("accept_lengths") and None not in x["accept_lengths"] for x in rows)
    bad = {r["question_id"] for recs in runs for r in recs
           if method in r["methods"] and not all(r["methods"][method]["match"])}
    return {"questions": len(answers[0][0]) if answers else 0, "runs": len(runs), "new_tokens": tokens,
            "wall_s": sum(sum(x["wall_s"]) for x in rows), "verifier_passes": n_pass,
            "mean_accepted": rep["mean_accepted"] if listed else (tokens / n_pass if n_pass else None),
            "tokens_per_s": rep["tokens_per_s"], "tokens_per_s_std": rep["tokens_per_s_std"],
            "speedup": rep["speedup"], "speedup_std": rep["speedup_std"], "mismatches": len(bad),
            "equal_py": all(sb.equal(a, base) for a, base in answers)}


def summarize(runs: list[list[dict]], methods: list[str]) -> dict:
    """Per category (first-seen order) and overall, and per Spec-Bench task (those with questions): per-method stats
    over the repeats ``runs`` (each a list of records)."""
    cats = list(dict.fromkeys(r["category"] for recs in runs for r in recs))
    by_group = {g: {m: method_stats([in_group(recs, g) for recs in runs], m) for m in methods} for g in
                [*cats, "overall"]}
    tasks = [t for t in sb.TASKS if sb.select([{"category": c} for c in cats], t)]
    by_task = {t: {m: method_stats([[r for r in recs if sb.select([r], t)] for recs in runs], m) for m in methods}
               for t in tasks}
    return {"methods": list(methods), "groups": [*cats, "overall"], "by_group": by_group, "tasks": tasks,
            "by_task": by_task, "runs": len(runs),
            "lossless": all(s["mismatches"] == 0 for s in by_group["overall"].values())}


def match_cell(s: dict) -> str:
    return "yes" if s["mismatches"] == 0 else f"NO ({s['mismatches']} of {s['questions']})"


def cell(s: dict, key: str, spec: str, suffix: str = "") -> str:
    """``key`` of a method's stats, with `` +- std`` when repeats measured one."""
    if s[key] is None:
        return fmt(None)
    std = s.get(key + "_std")
    return fmt(s[key], spec) + suffix + ("" if std is None else f" ± {fmt(std, spec)}")


def matrix_markdown(summary: dict, key: str, spec: str, suffix: str = "", by: str = "group") -> str:
    """One row per group (categories, then overall; or Spec-Bench task), one column per method."""
    methods = summary["methods"]
    lines = [f"| {'category' if by == 'group' else 'task'} | questions | " + " | ".join(methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for g in summary["groups" if by == "group" else "tasks"]:
        stats = summary["by_" + by][g]
        name = f"**{g}**" if g == "overall" else g
        lines.append(f"| {name} | {stats['baseline']['questions']} | " +
                     " | ".join(cell(stats[m], key, spec, suffix) for m in methods) + " |")
    return "\n".join(lines)


NOTES = ("Notes: mean accepted length = tokens per verifier pass (target-model forward passes that emit tokens: 1.0 "
         "for plain decoding), the mean of every pass's accepted tokens as Spec-Bench's speed.py pools them. Ours "
         "count passes exactly; for HF methods a forward hook counts the target model's calls (the prompt call "
         "included: it already emits the first token) and reads each call's tokens from its positions; "
         "early_exit_assist's drafting calls (the same model cut to the exit layer) are not counted. tokens/s and "
         "speedup as Spec-Bench's speed.py: a method's speed is the mean over questions of its new tokens / wall "
         "seconds (prefill included); the baseline's tokens are re-counted from its answer text with the tokenizer "
         "(len(tokenizer(turn).input_ids) - 1 per turn: SmolLM2's tokenizer adds no BOS, so this drops one real "
         "token per turn and the EOS is not in the text); speedup = the method's speed / that baseline speed, so the "
         "baseline's own row is what speed.py gives it against itself. With repeats: mean ± sample std (ddof 1) "
         "over the repeats, accepted lengths pooled, new tokens summed over them. matches baseline: `NO (k of n)` = "
         "k of n questions have a turn whose token ids differ from the baseline's (in some repeat); equal.py: "
         "Spec-Bench's check of the answer texts in file order, in every repeat. The answer files: "
         "OUT/data/spec_bench/model_answer_temp0_run_R/.")


def table_markdown(summary: dict, meta: dict) -> str:
    kind = "greedy" if meta.get("sampling", "greedy") == "greedy" else "sampled"
    lines = [f"# Method comparison ({kind}, lossless)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
    runs = f", mean ± std over {summary['runs']} repeats" if summary["runs"] > 1 else ""
    lines += [f"- command: `{meta.get('command', '')}`", "", NOTES, "",
              f"## Speedup over the baseline (Spec-Bench speed.py{runs})", "",
              matrix_markdown(summary, "speedup", ".2f", "x"), "",
              "## Mean accepted length (tokens per target-model pass)", "",
              matrix_markdown(summary, "mean_accepted", ".2f"), "",
              "## Spec-Bench tasks (speed.py's grouping: mt_bench = its eight MT-bench categories)", "",
              matrix_markdown(summary, "speedup", ".2f", "x", by="task"), "",
              "Every method matched the baseline on every question." if summary["lossless"] else
              "**Some method's output differed from the baseline's: see `matches baseline` below.**", ""]
    for g in summary["groups"]:
        stats = summary["by_group"][g]
        n = stats["baseline"]["questions"]
        lines += [f"## {g} ({n} questions)", "",
                  "| method | new tokens | mean accepted length | tokens/s | speedup | matches baseline | equal.py |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for m in summary["methods"]:
            s = stats[m]
            lines.append(f"| {m} | {s['new_tokens']} | {fmt(s['mean_accepted'], '.2f')} | "
                         f"{cell(s, 'tokens_per_s', '.2f')} | {cell(s, 'speedup', '.2f', 'x')} | {match_cell(s)} | "
                         f"{'yes' if s['equal_py'] else 'NO'} |")
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
        stats = [summary["by_group"][g][m] for g in groups]
        ys = [np.nan if s["speedup"] is None else s["speedup"] for s in stats]
        err = [s["speedup_std"] or 0.0 for s in stats] if summary["runs"] > 1 else None
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, ys, width, yerr=err, label=m)
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel("speedup over baseline (tokens/s ratio)")
    ax.set_title("Greedy decoding methods vs our baseline")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png


def heldout_markdown(heldout: dict) -> str:
    """The held-out section of table.md ('' without one): each deployed self-drafter on the fixed held-out set."""
    if not heldout:
        return ""
    lines = ["", "## Held-out agreement (fixed held-out set, teacher-forced; dvi/heldout.py)", "",
             "| method | drafter | top-1 agreement | accepted length | positions |", "|---|---|---:|---:|---:|"]
    lines += [f"| {m} | {h['drafter']} | {h['top1']:.3f} | {h['accept_len']:.2f} | {h['n']} |"
              for m, h in heldout.items()]
    return "\n".join(lines + ["", "Top-1 agreement: the share of held-out positions where the drafter's top-1 is the "
                              "verifier's greedy token; accepted length: from each position, the consecutive "
                              "agreeing positions (at most --steps), the drafts a chain started there would keep.",
                              ""])


def write_report(out: Path, runs: list[list[dict]], methods: list[str], meta: dict,
                 heldout: dict | None = None) -> dict:
    """``runs``: each repeat's records; the per-source table sums every repeat's turns; ``heldout``: method ->
    its drafter's held-out evaluation (``cli.heldout_scores``)."""
    summary = summarize(runs, methods)
    summary["sources"] = sources_summary([r for recs in runs for r in recs], methods)
    summary["heldout"] = heldout or {}
    atomic_write_text(out / "table.md", table_markdown(summary, meta) + sources_markdown(summary["sources"])
                      + heldout_markdown(summary["heldout"]))
    atomic_write_text(out / "summary.json", json.dumps({"meta": meta, **summary}, indent=2))
    plot_speedup(summary, out / "speedup.png")
    return summary
