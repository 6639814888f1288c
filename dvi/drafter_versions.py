"""A folder of versioned drafter checkpoints, the hand-over between the DVI sidecar (``dvi/sidecar.py``, which
publishes) and the drafter side (``dvi/hot_swap.py``, which adopts): ``drafter_v{N:06d}.pt``, each a DVI checkpoint
(``dvi/checkpoint.py``) renamed into place whole, so the highest-numbered file is always the latest complete one."""
from __future__ import annotations

from pathlib import Path

PATTERN = "drafter_v{:06d}.pt"


def version_path(folder, version: int) -> Path:
    return Path(folder) / PATTERN.format(version)


def latest_version(folder) -> tuple[int, Path] | None:
    """(N, path) of the newest published version in ``folder``, or None."""
    found = [(int(p.stem[9:]), p) for p in Path(folder).glob("drafter_v*.pt") if p.stem[9:].isdigit()]
    return max(found) if found else None
