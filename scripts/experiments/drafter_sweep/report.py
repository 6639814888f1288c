"""The drafter sweep's report (``sweep.py``): both phases ranked by tokens/s against greedy, from the runs' files.

    OUT/online/NAME/metrics/{acceptance.csv,speed.csv,vs_greedy.json}   each online run
    OUT/deployed/{summary.json,counters.json}                            the deployed phase (benchmark report)
  -> OUT/table.md, OUT/summary.json
"""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from common.cells import fmt
from scripts.experiments.series import load_metrics, quarters


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def online_rows(out: Path, trained) -> list[dict]:
    rows = []
    for t in trained:
        run = out / "online" / t.name
        m, ref = load_metrics(run), _json(run / "metrics" / "vs_greedy.json")
        q = quarters(m) if m is not None else None
        rows.append({"name": t.name, "exit_layer": t.exit_layer, "adapter": t.adapter, "vocab": t.vocab or "full",
                     "top1_agree_last": q and q["last"]["top1_agree"],
                     "top1_agree_first": q and q["first"]["top1_agree"],
                     "committed_last": q and q["last"]["mean_accepted"], "vs_greedy": ref.get("speedup"),
                     "equal": ref.get("equal_to_greedy"), "turns": ref.get("turns")})
    return rows


def deployed_rows(out: Path, deployed) -> list[dict]:
    summary, counters = _json(out / "deployed" / "summary.json"), _json(out / "deployed" / "counters.json")
    overall = summary.get("by_group", {}).get("overall", {})
    rows = []
    for v in deployed:
        s, c = overall.get(v.name, {}), counters.get(v.name, {})
        rows.append({"name": v.name, "trained": v.trained.name, "steps": v.steps, "drafter": v.drafter,
                     "speedup": s.get("speedup"), "tokens_per_s": s.get("tokens_per_s"),
                     "mean_accepted": s.get("mean_accepted"), "mismatches": s.get("mismatches"),
                     "probes": c.get("probes"), "declined_free": c.get("declined_free")})
    return rows


def best(rows: list[dict], key: str) -> str | None:
    scored = [r for r in rows if r.get(key) is not None]
    return max(scored, key=lambda r: r[key])["name"] if scored else None


def write_sweep_report(out: Path, trained, deployed, command: str) -> bool:
    """OUT/table.md and OUT/summary.json; returns whether every output seen equals greedy's."""
    on, dep = online_rows(out, trained), deployed_rows(out, deployed)
    lines = ["# Drafter settings by measured tokens/s", "", f"```bash\n{command}\n```", "",
             "## Online: DVI learning while decoding (same prompts; decode tokens/s against greedy in the same run)",
             "", ("| run | exit layer | adapter | vocabulary | top1_agree first q. | **last q.** | "
                  "committed/pass last q. | **decode / greedy** | equal to greedy |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in on:
        lines.append(f"| {r['name']} | {r['exit_layer']} | {'on' if r['adapter'] else 'off'} | {r['vocab']} | "
                     f"{fmt(r['top1_agree_first'])} | {fmt(r['top1_agree_last'])} | {fmt(r['committed_last'])} | "
                     f"{fmt(r['vs_greedy'])}x | {r['equal'] if r['equal'] is not None else '-'}/{r['turns'] or '-'} |")
    lines += ["", "## Deployed: frozen drafters on Spec-Bench (greedy and all variants per question, rotated)", "",
              ("| variant | trained run | steps | drafter | tokens/s | **speedup** | committed/pass | probes | "
               "declined free | mismatches |"), "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in dep:
        lines.append(f"| {r['name']} | {r['trained']} | {r['steps']} | {r['drafter']} | "
                     f"{fmt(r['tokens_per_s'], '.2f')} | {fmt(r['speedup'])}x | {fmt(r['mean_accepted'])} | "
                     f"{fmt(r['probes'], 'd')} | {fmt(r['declined_free'], 'd')} | {fmt(r['mismatches'], 'd')} |")
    choice = {"online": best(on, "vs_greedy"), "deployed": best(dep, "speedup")}
    lines += ["", (f"Best online (decode / greedy): **{choice['online']}**; best deployed (speedup): "
                   f"**{choice['deployed']}**. Per category: `deployed/table.md`."), ""]
    atomic_write_text(out / "table.md", "\n".join(lines))
    summary = {"command": command, "online": on, "deployed": dep, "best": choice}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print("\n".join(lines))
    lossless = all(r["equal"] == r["turns"] for r in on if r["turns"]) and not any(r["mismatches"] for r in dep)
    return lossless
