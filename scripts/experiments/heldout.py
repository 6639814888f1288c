"""Held-out domain: train the drafter online on Spec-Bench questions of every category but one, then deploy it on
the category it never saw and on as many unseen questions of the training categories, beside the untrained drafter.

    python -m scripts.experiments heldout --out runs/exp_heldout [--heldout translation] [--max-prompts 150]
        [--eval-questions 20] [--question-file Q] [extra driver flags, e.g. --seed 123 --dvi-lr 3e-3]

Data: OUT/data/questions.jsonl = the question file in category round-robin order (``question_mix.py``). Runs (each
``evaluation.inference_kangaroo`` in-process, resumable as every experiment's, ``runner.py``):

    train              --dvi-online true  --exclude-categories X --question-end N          (N = --max-prompts)
    untrained_heldin   --dvi-online false --exclude-categories X --question-begin N --question-end N+M
    untrained_heldout  --dvi-online false --categories X --question-end M                  (M = --eval-questions)
    trained_heldin     as untrained_heldin,  with --load-lora OUT/train/checkpoints/final.pt
    trained_heldout    as untrained_heldout, with --load-lora OUT/train/checkpoints/final.pt

The evaluation cells draft with ``--drafter self --draft-policy threshold`` (after the extra flags: they win), so
every block measures the drafter head; the training run drafts as the extra flags say. A changed checkpoint or data
file reruns the cells that read it.
"""
from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from common.cells import fmt
from evaluation.cli import OneLineParser, fail, resolve_question_file
from evaluation.questions import load_questions, select_categories
from scripts.experiments.cli import add_common_args, check_common
from scripts.experiments.heldout_report import CURVES_PNG, DOMAINS, DRAFTERS, PNG, build_heldout_report, cell_name
from scripts.experiments.question_mix import round_robin, write_questions
from scripts.experiments.report_files import ENTRY, command_line, record_command, report_meta
from scripts.experiments.runner import LAYOUT_FLAGS, RunPlan, Variant, run_variants

EVAL_DRAFTING = ("--drafter", "self", "--draft-policy", "threshold")
OWNED = (*LAYOUT_FLAGS, "--categories", "--exclude-categories", "--question-begin", "--question-end",
         "--prompts-jsonl", "--bench-name")
KEEP = ("held-out category", "training questions", "questions per cell", "training categories")


def parse_args(argv: list[str]):
    p = OneLineParser(prog=f"{ENTRY} heldout", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m", help="as for evaluation.inference_kangaroo")
    p.add_argument("--question-file", default=None,
                   help="Spec-Bench question.jsonl (default: as the driver finds it, data/spec_bench/question.jsonl "
                        "then ../shared/data/spec_bench/question.jsonl)")
    p.add_argument("--heldout", default="translation", help="the category left out of the training stream")
    p.add_argument("--eval-questions", type=int, default=20,
                   help="questions per evaluation cell (the held-out category; the held-in sample)")
    add_common_args(p, out="runs/exp_heldout", max_prompts=150, max_prompts_help="training questions (online)")
    args, extra = p.parse_known_args(argv)
    check_common(args, extra, OWNED, "the heldout experiment", needs=("model_id",))
    if args.eval_questions < 1:
        fail("--eval-questions must be >= 1")
    args.extra = extra
    return args


def mixed_questions(args) -> list[dict]:
    """The question file in round-robin order, after checking it holds the held-out category and enough of the
    others for N training and M held-in questions, and M held-out ones."""
    ns = SimpleNamespace(question_file=args.question_file, bench_name="spec_bench", prompts_jsonl=None)
    resolve_question_file(ns)
    args.question_file = ns.question_file
    mix = round_robin(load_questions(ns.question_file))
    held_in = select_categories(mix, None, [args.heldout], ns.question_file)  # an unknown category: one line
    n_out, need = len(mix) - len(held_in), args.max_prompts + args.eval_questions
    if len(held_in) < need:
        fail(f"{ns.question_file} has {len(held_in)} questions outside {args.heldout}: --max-prompts "
             f"{args.max_prompts} + --eval-questions {args.eval_questions} need {need}; lower them")
    if n_out < args.eval_questions:
        fail(f"{ns.question_file} has {n_out} {args.heldout} questions: lower --eval-questions to at most {n_out}")
    return mix


def variants(args, qfile: Path) -> list[Variant]:
    x, n, m = args.heldout, args.max_prompts, args.eval_questions
    ckpt = str(Path(args.out) / "train" / "checkpoints" / "final.pt")
    select = {"held-in": ("--exclude-categories", x, "--question-begin", str(n), "--question-end", str(n + m)),
              "held-out": ("--categories", x, "--question-end", str(m))}
    out = [Variant("train", ("--dvi-online", "true", "--exclude-categories", x, "--question-end", str(n)),
                   inputs=(str(qfile),))]
    for drafter in DRAFTERS:
        load = ("--load-lora", ckpt) if drafter == "trained" else ()
        out += [Variant(cell_name(drafter, d), ("--dvi-online", "false", *load, *select[d]), online=False,
                        inputs=(str(qfile), *load[1:]), overrides=EVAL_DRAFTING) for d in DOMAINS]
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out, command = Path(args.out), command_line("heldout", argv)
    meta, data = {"experiment": "heldout", "out": str(out), "window": args.window}, None
    if not args.report_only:
        mix = mixed_questions(args)
        train = select_categories(mix, None, [args.heldout])[:args.max_prompts]
        meta.update({"held-out category": args.heldout, "training questions": args.max_prompts,
                     "questions per cell": args.eval_questions,
                     "training categories": ", ".join(f"{k} {v}" for k, v in
                                                      Counter(q.get("category") for q in train).items())})
        data = (f"{args.question_file} in category round-robin order (OUT/data/questions.jsonl), max new tokens "
                f"{args.max_new_tokens}, model {args.model_id}, extra flags: {shlex.join(args.extra) or 'none'}")
        record_command(out, command)
        qfile = write_questions(out / "data" / "questions.jsonl", mix)
        plan = RunPlan(out, ("--model-id", args.model_id, "--question-file", str(qfile), "--max-new-tokens",
                             str(args.max_new_tokens)), tuple(args.extra), args.num_threads, args.overwrite,
                       tag="heldout")
        run_variants(plan, variants(args, qfile))
    meta = report_meta(out, meta, command, args.report_only, data, keep=KEEP)
    cells = build_heldout_report(out, args.window, meta)
    for name, c in cells.items():
        print(f"[heldout] {name}: {c['questions']} questions, {c['blocks']} blocks, top1_agree {fmt(c['top1_agree'])}, "
              f"mean accepted {fmt(c['mean_accepted'])}")
    print(f"[heldout] {out / 'table.md'}, {out / PNG}, {out / CURVES_PNG}")
    return 0
