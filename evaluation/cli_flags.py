"""Every driver's flags, in groups. The model, drafting and DVI flags are a session's
(``kangaroo_dvi/session_flags.py``: generated from ``SessionConfig``, ``DrafterConfig`` and ``DVIConfig``), so each is
defined once, with its default and help, where it is checked; the flags written here are the driver's own (questions
and answers, --compare-greedy).

Defaults follow the work plan's quick reference:
  Kangaroo  --exitlayer 2 --threshold 0.6 --steps 6
  Buffer    --dvi-store topk --dvi-topk 1024 --dvi-logits-dtype float16 --dvi-buffer-size 2048 --dvi-batch-size 64
  Time cap  --max-online-train-ms 5
except the training settings (LoRA shape, lr, tau, schedule, cadence, loss terms, dense supervision): those come
from ``--dvi-settings`` (``dvi/settings.py``: ``tuned`` for the bundled small model by default, ``workplan`` for the
work plan's 7B values); a flag given explicitly wins.
"""
from __future__ import annotations

import argparse

from common.command_line import OneLineParser, fail
from common.config_fields import add_flags
from kangaroo.drafter_config import SPECULATION_FLAGS, DrafterConfig
from kangaroo_dvi.session_flags import add_dvi_args, add_kangaroo_args, add_model_args, add_sampling_args


def int_list(text: str, what: str, minimum: int = 0) -> list[int]:
    """A flag's comma-separated integers, each >= ``minimum``, first-seen order, duplicates dropped; else one line
    naming the flag ``what``, exit 2."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        fail(f"{what} {text!r}: expected comma-separated integers >= {minimum}")
    return list(dict.fromkeys(values))


def category_list(v: str) -> list[str]:
    """A comma-separated list of question categories (at least one)."""
    names = list(dict.fromkeys(c.strip() for c in str(v).split(",") if c.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated category names, got {v!r}")
    return names


def add_exitlayer_arg(g) -> None:
    add_flags(g, DrafterConfig, only={"--exitlayer"})


def add_speculation_args(g) -> None:
    """--exitlayer, --threshold, --steps: the Kangaroo block, for drivers and benchmark scripts alike."""
    add_flags(g, DrafterConfig, only=SPECULATION_FLAGS)


def add_drafter_args(g) -> None:
    """Who drafts and when to stop (kangaroo/drafters/, kangaroo/draft_policy.py, kangaroo/drafter_config.py)."""
    add_flags(g, DrafterConfig, skip=SPECULATION_FLAGS)


def add_driver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("questions and answers (Spec-Bench layout)")
    g.add_argument("--bench-name", default="spec_bench", help="benchmark folder name (default spec_bench)")
    g.add_argument("--question-file", default=None,
                   help="question jsonl (default: data/BENCH/question.jsonl, then ../shared/data/BENCH/question.jsonl)")
    g.add_argument("--question-begin", type=int, default=None,
                   help="index of the first question (inclusive), among those --categories/--exclude-categories keep")
    g.add_argument("--question-end", type=int, default=None,
                   help="index of the last question (exclusive), among those --categories/--exclude-categories keep")
    g.add_argument("--categories", type=category_list, default=None, metavar="A,B",
                   help="only questions of these categories (comma-separated; applied before the index range)")
    g.add_argument("--exclude-categories", type=category_list, default=None, metavar="A,B",
                   help="no question of these categories (comma-separated; applied before the index range)")
    g.add_argument("--answer-file", default=None,
                   help="answer jsonl (default: runs/answers/BENCH/MODEL-METHOD.jsonl); existing answers are kept "
                        "and their questions skipped unless --overwrite")
    g.add_argument("--overwrite", action="store_true", help="start the answer file afresh")
    g.add_argument("--max-new-tokens", type=int, default=1024)
    add_sampling_args(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--prompts-jsonl", default=None,
                   help="stream prompts from a ShareGPT jsonl (python -m data.sharegpt_stream --convert) instead of "
                        "questions")
    g.add_argument("--max-prompts", type=int, default=None, help="use the first N usable prompts of --prompts-jsonl")


def build_parser(kind: str = "kangaroo", description: str | None = None) -> argparse.ArgumentParser:
    if kind not in ("baseline", "kangaroo"):
        raise ValueError(kind)
    p = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_driver_args(p)
    if kind == "kangaroo":
        add_kangaroo_args(p).add_argument(
            "--compare-greedy", action="store_true",
            help="after each decoded turn, decode it greedily too (timed alike, outside the run's time): the run's "
                 "decode tokens/s against greedy on the same prompts, and every output checked against greedy "
                 "(under --temperature > 0: plain sampling with the same seed); written to METRICS/vs_greedy.json")
        add_dvi_args(p)
    return p

