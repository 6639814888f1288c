"""What every experiment report writes and how it records the command: OUT/command.txt (the command of the last
run that ran variants), OUT/table.md (a header of meta bullets, then the tables), OUT/summary.json.

A ``--report-only`` rebuild keeps the command and data of the run that made the folders (read back from the old
summary.json) and adds its own command as ``report``."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from common.atomic import atomic_write_text


ENTRY = "python -m scripts.experiments"  # every experiment's one entry: ENTRY NAME [flags]


def command_line(name: str, argv: list[str]) -> str:
    """The command that ran experiment ``name`` with ``argv``, as a shell line."""
    return shlex.join([*ENTRY.split(), name, *argv])


def record_command(out: Path, command: str) -> None:
    """OUT/command.txt: the exact command, written before any variant runs (an interrupted run keeps it too)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "command.txt", command + "\n")


def report_meta(out: Path, meta: dict, command: str, report_only: bool, data: str | None,
                keep: tuple[str, ...] = ()) -> dict:
    """``meta`` plus the command and the data line (a report-only rebuild: those of the run that made OUT, and its
    ``keep`` entries)."""
    meta = {**meta, "command": command}
    previous = out / "summary.json"
    if report_only and previous.exists():
        made = json.loads(previous.read_text()).get("meta", {})
        if "command" in made:
            meta["report"] = command
        meta.update({k: made[k] for k in ("command", "data", *keep) if k in made})
    if not report_only and data is not None:
        meta["data"] = data
    return meta


def meta_markdown(title: str, meta: dict) -> list[str]:
    """The table.md header: the title, one bullet per meta entry, the command last (as code)."""
    return (["# " + title, ""] + [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
            + [f"- command: `{meta.get('command', '')}`", ""])


def write_report(out: Path, table_md: str, summary: dict) -> None:
    atomic_write_text(out / "table.md", table_md)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
