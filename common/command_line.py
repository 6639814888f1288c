"""How the command line reports a mistake: one line naming the flag and the fix, exit code 2, no usage dump and no
traceback (``OneLineParser`` for argparse's own errors, ``fail`` for ours, ``run_main`` for a ``UserError`` raised
anywhere below a driver's main)."""
from __future__ import annotations

import argparse
import sys

from common.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and name the fix."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see --help)\n")


def fail(msg: str) -> None:
    """Print one error line and exit 2."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def run_main(main_fn, argv=None) -> int:
    """Run a driver's main, turning UserError into one line and exit code 2."""
    try:
        return main_fn(argv) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished answers are kept in the answer file; rerun to continue", file=sys.stderr)
        return 130


def run_named(prog: str, commands: dict, argv=None) -> int:
    """``prog NAME [flags]``: ``commands[NAME](flags)``, one entry for several tools (``python -m scripts.profile``,
    ``python -m scripts.experiments``); a missing or unknown NAME is one line naming the choices."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands:
        fail(f"name one first: {prog} {{{','.join(commands)}}} [flags] (got {argv[0] if argv else 'nothing'})")
    return commands[argv[0]](argv[1:])
