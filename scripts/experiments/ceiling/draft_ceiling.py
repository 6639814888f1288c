"""What can a self-drafter buy on this engine, at each exit layer? The measured costs of drafting and verifying
(``python -m scripts.profile block`` at that exit layer) against the skill a LoRA drafter head reaches there when
trained offline on teacher-forced answers (``learnability.py``), under ideal policies (``policies.py``): the
ceiling of ``dvi_self`` and of a top-2 token tree, and the agreement the targets would need.

    python -m scripts.experiments ceiling --answers runs/record_nov30b/main/answers.jsonl --exitlayers 1,2,4,8,12,16 \
        --out runs/exp_draft_ceiling

Every profile runs first (nothing else may run while they time), then the offline trainings; ``--reuse-profiles``
keeps the profiles already in OUT; ``--report-only`` rebuilds the table from OUT's trainings. Output: OUT/k{K}/profile/,
OUT/k{K}/probe/probe.json, OUT/table.md (also on stdout).
"""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from evaluation.cli import OneLineParser, int_list
from scripts.experiments.ceiling import learnability
from scripts.experiments.ceiling.policies import StepCosts, needed_agreement
from scripts.experiments.report_files import ENTRY, command_line
from scripts.profile import block

COLUMNS = ["agreement top-1", "agreement top-2", "always draft one", "drafter confidence decides the row",
           "verifier's last confidence decides the draft", "top-2 tree, always", "foresight: only agreeing drafts"]
BENCH_COLUMNS = ["agreement self", "agreement ngram", "agreement memory", "agreement any",
                 "drafter confidence decides the row", "lookups: their confidence decides", "foresight: self",
                 "foresight: ngram + memory", "foresight: self + ngram + memory",
                 "lookups: their confidence decides, prefill included", "foresight: self, prefill included",
                 "foresight: self + ngram + memory, prefill included"]


def rows(records: dict[int, dict], key: str, columns: list[str]) -> list[str]:
    """One markdown row per exit layer's training record: its costs, its ``key`` table in ``columns``, the agreement
    needed."""
    lines = []
    for k, rec in records.items():
        c = StepCosts(**rec["costs"])
        ceil = rec["results"][-1].get(key)
        if ceil is None:
            continue
        need = " / ".join(f"{needed_agreement(1.15, c, after_draft=a):.2f}" for a in (False, True))
        cells = [str(k)] + [f"{x:.3f}" for x in (c.draft, c.row, c.lookup_row)] + [f"{ceil[n]:.3f}" for n in columns]
        cells.append(need)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def table(out: Path, ks: list[int], command: str) -> str:
    records = {k: json.loads((out / f"k{k}" / "probe" / "probe.json").read_text()) for k in ks}
    lines = [f"# Self-drafting ceiling per exit layer\n\n- command: `{command}`\n"]
    for title, key, columns in (("Held-out positions of the training answers", "ceiling", COLUMNS),
                                ("The benchmark's questions (--eval-raw)", "benchmark", BENCH_COLUMNS)):
        body = rows(records, key, columns)
        if body:
            head = (["exit layer k", "self-drafted token / step", "its row / step", "a lookup's row / step"] + columns
                    + ["agreement needed for 1.15x: before / after"])
            lines += [f"## {title}\n", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head), *body, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = OneLineParser(prog=f"{ENTRY} ceiling", description=__doc__.splitlines()[0])
    ap.add_argument("--answers", default="", help="an answer file with token_ids (a main job's answers.jsonl); "
                    "needed but with --report-only")
    ap.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl", help="the ShareGPT prompts of --answers")
    ap.add_argument("--exitlayers", default="1,2,4,8,12,16", help="comma-separated exit layers >= 1")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--eval-raw", default="", help="a benchmark's raw.jsonl: the ceilings on its questions too")
    ap.add_argument("--question-file", default="", help="the questions of --eval-raw (default: Spec-Bench's)")
    ap.add_argument("--reuse-profiles", action="store_true", help="keep the profiles OUT already holds (a rerun of "
                    "the trainings alone: each profile's own command is in its block_costs.md)")
    ap.add_argument("--report-only", action="store_true", help="rebuild OUT/table.md from the trainings OUT holds")
    ap.add_argument("--model-id", default="smollm2-135m")
    ap.add_argument("--out", default="runs/exp_draft_ceiling")
    args = ap.parse_args(argv)
    args.exitlayers = int_list(args.exitlayers, "--exitlayers", 1)
    out = Path(args.out)
    if not args.report_only:
        if not args.answers:
            ap.error("--answers is needed (an answer file with token_ids), unless --report-only")
        measure(args, out)
    text = table(out, args.exitlayers, command_line("ceiling", argv or []))
    atomic_write_text(out / "table.md", text)
    print(text)
    return 0


def measure(args, out: Path) -> None:
    """Every exit layer's profile (unless --reuse-profiles finds it), then every exit layer's offline training."""
    common = ["--model-id", args.model_id]
    for k in args.exitlayers:
        if args.reuse_profiles and (out / f"k{k}/profile/block_costs.json").is_file():
            continue
        block.main(common + ["--context", "160", "--threads", "1", "--engines", "auto", "--weights-list", "stored",
                             "--drafter-vocabs", "4096,8192", "--head-precisions", "float32,int8", "--batch-sizes", "1",
                             "--exitlayer", str(k), "--out", str(out / f"k{k}/profile")])
    for k in args.exitlayers:
        learnability.main(common + ["--num-threads", "1", "--answers", args.answers, "--prompts-jsonl",
                                    args.prompts_jsonl, "--exitlayer", str(k), "--lrs",
                                    "1e-2", "--ranks", "64", "--presets", "ce_only", "--train-steps",
                                    str(args.train_steps), "--costs", str(out / f"k{k}/profile/block_costs.json"),
                                    "--out", str(out / f"k{k}/probe")]
                          + (["--eval-raw", args.eval_raw] if args.eval_raw else [])
                          + (["--question-file", args.question_file] if args.question_file else []))
