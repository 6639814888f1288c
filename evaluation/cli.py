"""The command line of every driver: parse, resolve, build the typed configs, and print errors; nothing else.

    parse_args(kind, argv)   flags (``cli_flags``: the driver's own; the session's from ``kangaroo_dvi.session_flags``,
                             generated from ``SessionConfig``, ``DrafterConfig`` and ``DVIConfig``) -> resolved (the
                             session's open values, as the server resolves them; the question file) -> checked
                             (``cli_checks``: the driver's own flags, then the configs built once, each checking its
                             own settings)
    session_config(args)     the frozen ``SessionConfig`` (model, runtime, adapter, seed, --load-lora)
    drafter_config(args)     the frozen ``DrafterConfig``
    dvi_config(args)         the frozen ``DVIConfig``
    sampling_params(args)    the frozen ``SamplingParams`` (--temperature, --top-p, --top-k, --seed)
    validate_against_config  the checks that need the model's config (the Python API runs the same ones)
    apply_runtime(args)      the side effects (torch threads, the engine switch, weights) for scripts that build no
                             session (``build_session`` applies them itself); parsing never
    int_list(text, flag)     a flag's comma-separated integers, or one line naming the flag
    run_main(main)           a ``UserError`` anywhere below main -> one line, exit code 2

A wrong flag ends the program with one line naming the flag and the fix, exit code 2. The names below are the ones
drivers and scripts import; the parts live in the ``cli_*`` modules and ``kangaroo_dvi.session_flags``.
"""
from __future__ import annotations

from common.command_line import OneLineParser, fail, run_main
from dvi.presets import PRESETS
from evaluation.cli_checks import check_prompts_jsonl, validate_against_config, validate_configs, validate_static
from evaluation.cli_flags import (add_drafter_args, add_exitlayer_arg, add_speculation_args, build_parser,
                                  int_list)
from evaluation.cli_resolve import resolve_question_file
from kangaroo.runtime import apply_runtime
from kangaroo_dvi.session_flags import (add_dvi_args, add_kangaroo_args, add_model_args, add_sampling_args,
                                        drafter_config, dvi_config, resolve_device_dtype, resolve_dvi_settings,
                                        resolve_lora_shape, resolve_model_id, resolve_session_flags, sampling_params,
                                        session_config)

ABLATIONS = tuple(PRESETS)  # the loss presets are defined once, in dvi/presets.py


def parse_args(kind: str = "kangaroo", argv=None, description: str | None = None):
    """Parsed, resolved and checked flags of a driver ``kind`` ("baseline" or "kangaroo"); no side effects."""
    args = build_parser(kind, description).parse_args(argv)
    resolve_model_id(args)
    if kind == "kangaroo":
        resolve_session_flags(args)
    validate_static(args)
    resolve_question_file(args)
    resolve_device_dtype(args)
    return args


__all__ = ["ABLATIONS", "OneLineParser", "add_drafter_args", "add_dvi_args", "add_exitlayer_arg", "add_kangaroo_args",
           "add_model_args", "add_sampling_args", "add_speculation_args", "apply_runtime", "build_parser",
           "check_prompts_jsonl", "drafter_config", "dvi_config", "fail", "int_list", "parse_args",
           "resolve_device_dtype", "resolve_dvi_settings", "resolve_lora_shape", "resolve_model_id",
           "resolve_question_file", "run_main", "sampling_params", "session_config", "validate_against_config",
           "validate_configs", "validate_static"]
