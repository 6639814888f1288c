"""Experiments whose runs all decode the first --max-prompts prompts of the --prompts-jsonl stream (ShareGPT):
their shared run plan, their report's data line, and run-then-meta (what their ``main`` does before the report)."""
from __future__ import annotations

import shlex
from pathlib import Path

from scripts.experiments.report_files import record_command, report_meta
from scripts.experiments.runner import RunPlan, Variant, run_variants


def stream_plan(args, tag: str) -> RunPlan:
    data = ("--model-id", args.model_id, "--prompts-jsonl", args.prompts_jsonl, "--max-prompts", str(args.max_prompts),
            "--max-new-tokens", str(args.max_new_tokens))
    return RunPlan(Path(args.out), data, tuple(args.extra), args.num_threads, args.overwrite, tag=tag)


def stream_data_line(args) -> str:
    return (f"{args.prompts_jsonl}, first {args.max_prompts} prompts, max new tokens {args.max_new_tokens}, model "
            f"{args.model_id}, extra flags: {shlex.join(args.extra) or 'none'}")


def run_stream(args, command: str, tag: str, variants: list[Variant], meta: dict) -> dict:
    """Unless --report-only: record the command in OUT and run the variants; then the report's meta."""
    out = Path(args.out)
    if not args.report_only:
        record_command(out, command)
        run_variants(stream_plan(args, tag), variants)
    return report_meta(out, meta, command, args.report_only, stream_data_line(args))
