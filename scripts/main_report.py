"""OUT/README.md of a main job (``bash scripts/main.sh``): the online targets from the run's own files.

    python -m scripts.main_report --out runs/main --command "bash scripts/main.sh" [--note "machine shared"]

Reads OUT/metrics/acceptance.csv and speed.csv (top1_agree, over probed blocks, and acc@1 over the first and last
quarter of blocks, ``scripts.experiments.series``), OUT/metrics/heldout.csv (each trainable drafter's held-out
agreement at the start and the end of the run: the learning metric that does not depend on what drafted,
``dvi/heldout.py``) and OUT/metrics/vs_greedy.json (``--compare-greedy``: the run's decode tokens/s against greedy
decoding of the same prompts in the same run, and how many outputs equal greedy's).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from common.atomic import atomic_write_text
from common.cells import fmt
from scripts.experiments.series import load_metrics, quarters

TARGETS = {"top1_agree_last_quarter": 0.30, "decode_vs_greedy": 1.15}


def _target(value, name: str, unit: str = "") -> str:
    t = TARGETS[name]
    return f">= {t}{unit}" + ("" if value is None else f" ({'met' if value >= t else 'missed'})")


def heldout_rows(path: Path) -> list[tuple[str, str, str]]:
    """Per drafter of heldout.csv: top-1 agreement and accepted length, first -> last evaluation (none: no file)."""
    from dvi.metrics import heldout_ends

    out = []
    for d, ends in heldout_ends(path).items():
        a, b = ends["start"], ends["end"]
        steps = f"trainer steps {a['trainer_steps']} -> {b['trainer_steps']}, {b['n']} positions"
        out += [(f"held-out top-1 agreement ({d}), start -> end", f"{fmt(a['top1'])} -> {fmt(b['top1'])}", steps),
                (f"held-out accepted length ({d}), start -> end",
                 f"{fmt(a['accept_len'], '.2f')} -> {fmt(b['accept_len'], '.2f')}", "")]
    return out


def report(out: Path, command: str, note: str = "") -> str:
    m = load_metrics(out)
    if m is None:
        raise SystemExit(f"error: {out}/metrics/acceptance.csv not found: run the main job first "
                         "(bash scripts/main.sh)")
    q = quarters(m)
    ref_path = out / "metrics" / "vs_greedy.json"
    ref = json.loads(ref_path.read_text()) if ref_path.is_file() else {}
    agree, speed = q["last"]["top1_agree"], ref.get("speedup")
    rows = heldout_rows(out / "metrics" / "heldout.csv")
    rows += [("top1_agree (over probed blocks), last quarter of blocks", fmt(agree),
              _target(agree, "top1_agree_last_quarter")),
             ("top1_agree (over probed blocks), first quarter", fmt(q["first"]["top1_agree"]), ""),
             ("acc@1, last quarter (drafting blocks)", fmt(q["last"]["acc@1"]), ""),
             ("committed tokens per verifier pass, last quarter", fmt(q["last"]["mean_accepted"]), ""),
             ("decode tokens/s (the online run, same prompts)", fmt(ref.get("decode_tokens_per_s"), ".2f"), ""),
             ("greedy tokens/s (same prompts, same run, same threads)", fmt(ref.get("greedy_tokens_per_s"), ".2f"),
              ""),
             ("decode / greedy", f"{fmt(speed)}x", _target(speed, "decode_vs_greedy", "x")),
             ("decode / greedy per quarter of the prompts, in order",
              " / ".join(f"{fmt(x)}x" for x in ref.get("speedup_by_quarter") or []) or "-", "rising as it learns"),
             ("outputs equal to greedy", f"{ref.get('equal_to_greedy', '-')}/{ref.get('turns', '-')}", "all"),
             ("blocks", str(q["blocks"]), "")]
    lines = [f"# Main job: {out}", "", "```bash", command, "```", "",
             f"Machine: {platform.processor() or platform.machine()}, {note or 'see the command for threads'}.", "",
             "| measure | value | target |", "|---|---:|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", ("Held-out: each trainable drafter on the fixed held-out set (prompts the run never trains on, the "
                   "verifier's greedy answers): top-1 agreement and the teacher-forced accepted length (at most "
                   "--steps), at the first and the last evaluation. top1_agree is over the blocks the gate let the "
                   "self-drafter propose, so it moves with what drafted."),
              "", ("Files: `metrics/` (acceptance.csv, speed.csv, trainer.csv, prefill.csv, heldout.csv, "
                   "dvi_progress.png, vs_greedy.json), `answers.jsonl`, `log.txt`; the checkpoint "
                   "`checkpoints/final.pt` is git-ignored.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/main")
    p.add_argument("--command", default="bash scripts/main.sh")
    p.add_argument("--note", default="", help="e.g. whether the machine was shared")
    a = p.parse_args(argv)
    md = report(Path(a.out), a.command, a.note)
    atomic_write_text(Path(a.out) / "README.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
