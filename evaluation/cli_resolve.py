"""Resolving the driver's own parsed flags before any config is built: the question file (``data/BENCH/question.jsonl``,
then ``../shared/data/BENCH/question.jsonl``). A session's open values (model id, adapter, LoRA shape, drafter
vocabulary, named settings, device) are resolved by ``kangaroo_dvi/session_flags.py``, as the server resolves them.
Pure: nothing here changes the process.
"""
from __future__ import annotations

from pathlib import Path

from common.command_line import fail

REPO = Path(__file__).resolve().parent.parent


def resolve_question_file(args) -> None:
    if getattr(args, "prompts_jsonl", None):
        return
    if args.question_file is None:
        for cand in (REPO / "data" / args.bench_name / "question.jsonl",
                     REPO.parent / "shared" / "data" / args.bench_name / "question.jsonl"):
            if cand.exists():
                args.question_file = str(cand)
                break
        else:
            fail(f"no question file for --bench-name {args.bench_name}: pass --question-file PATH "
                 "(a Spec-Bench/MT-bench question.jsonl)")
    if not Path(args.question_file).is_file():
        fail(f"--question-file {args.question_file} does not exist: pass the path of a question.jsonl")
