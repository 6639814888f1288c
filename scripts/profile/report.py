"""What every profiler mode shares (``python -m scripts.profile MODE``): its parser (the model and speculation
flags the drivers take), the command line it records, and its report: OUT/NAME.md (also printed) and OUT/NAME.json,
written whole (``common/atomic.py``)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from common.atomic import atomic_write_text
from common.command_line import OneLineParser


def mode_parser(mode: str, doc: str, model: bool = True, speculation: bool = True) -> OneLineParser:
    """``mode``'s parser, described by the first line of its ``doc``; with the model flags (--model-id, --device,
    --dtype, --num-threads, ...) and the speculation flags (--exitlayer, --threshold, --steps) unless told not to."""
    from evaluation.cli import add_model_args, add_speculation_args

    p = OneLineParser(prog=f"python -m scripts.profile {mode}", description=doc.splitlines()[0])
    if model:
        add_model_args(p)
    if speculation:
        add_speculation_args(p)
    return p


def command(mode: str, argv) -> str:
    """The command that ran ``mode`` with ``argv``, as a shell line."""
    return shlex.join(["python", "-m", "scripts.profile", mode, *(argv or [])])


def write_report(out, name: str, md: str, record: dict | None = None) -> Path:
    """OUT/NAME.md and, given a ``record``, OUT/NAME.json; the markdown on stdout. Returns OUT."""
    out = Path(out)
    atomic_write_text(out / f"{name}.md", md)
    if record is not None:
        atomic_write_text(out / f"{name}.json", json.dumps(record, indent=2))
    print(md)
    return out
