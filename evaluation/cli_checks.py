"""The checks of the driver's own flags (decoding, questions, prompts), the typed configs built from the flags (each
checks its own settings: the first bad value is the one line shown), and the checks that need the model's config.
Every failure is one line and exit code 2 (``fail``)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from common.command_line import fail
from common.config_fields import check_against_model
from common.errors import ConfigError
from kangaroo_dvi.session_flags import drafter_config, dvi_config, sampling_params, session_config


def validate_static(args) -> None:
    """Checks that need no model config, in this order (the first failure is the one line shown)."""
    _validate_decoding(args)
    _validate_question_range(args)
    _validate_prompts(args)
    if hasattr(args, "steps"):
        validate_configs(args)


def validate_configs(args) -> None:
    """Build the typed configs the flags make (session, drafter, and DVI where the parser has its flags): one line on
    the first bad value."""
    try:
        session_config(args)
        drafter_config(args)
        if hasattr(args, "dvi_online"):
            dvi_config(args)
    except ConfigError as e:
        fail(str(e))


def validate_against_config(args, config) -> None:
    """Checks that need the model config (after loading it): the driver's positions, and the configs' own
    (``check_against_model``, which the Python API calls too)."""
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos is not None and args.max_new_tokens >= max_pos:
        fail(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in this model's {max_pos} "
             "positions: lower it")
    try:
        check_against_model(config, drafter_config(args) if hasattr(args, "exitlayer") else None,
                            dvi_config(args) if hasattr(args, "dvi_online") else None)
    except ConfigError as e:
        fail(str(e))


def _validate_decoding(args) -> None:
    try:
        sampling_params(args)
    except ConfigError as e:
        fail(str(e))
    if args.max_new_tokens < 1:
        fail(f"--max-new-tokens {args.max_new_tokens} must be >= 1")


def _validate_question_range(args) -> None:
    for name in ("question_begin", "question_end"):
        v = getattr(args, name)
        if v is not None and v < 0:
            fail(f"--{name.replace('_', '-')} {v} must be >= 0")
    if args.question_begin is not None and args.question_end is not None and args.question_end <= args.question_begin:
        fail("--question-end must be greater than --question-begin")
    if (args.categories or args.exclude_categories) and getattr(args, "prompts_jsonl", None):
        fail("--categories/--exclude-categories select questions of --question-file; the --prompts-jsonl stream has "
             "no categories: leave them out or drop --prompts-jsonl")


def _validate_prompts(args) -> None:
    if args.max_prompts is not None and args.max_prompts < 1:
        fail(f"--max-prompts {args.max_prompts} must be >= 1")
    if args.max_prompts is not None and not args.prompts_jsonl:
        fail("--max-prompts needs --prompts-jsonl PATH")
    if args.prompts_jsonl and not Path(args.prompts_jsonl).is_file():
        fail(f"--prompts-jsonl {args.prompts_jsonl} does not exist: convert the ShareGPT JSON first with "
             "python -m data.sharegpt_stream --convert IN.json OUT.jsonl (or fetch the assets: bash scripts/setup.sh)")
    if args.prompts_jsonl:
        check_prompts_jsonl(args.prompts_jsonl)


def check_prompts_jsonl(path: str) -> None:
    """Fail unless the ShareGPT jsonl holds at least one usable prompt (reads up to the first one)."""
    from data.sharegpt_stream import iter_sharegpt_jsonl, skip_summary

    stats: dict = {}
    with contextlib.redirect_stderr(io.StringIO()):  # the skip line belongs to the run, or to the error below
        pairs = iter_sharegpt_jsonl(path, stats=stats)
        found = next(pairs, None) is not None
        pairs.close()
    if not found:
        fail(f"--prompts-jsonl {path} holds no usable prompt ({skip_summary(stats, path) or 'the file is empty'}): "
             "pass a ShareGPT jsonl made by python -m data.sharegpt_stream --convert IN.json OUT.jsonl")
