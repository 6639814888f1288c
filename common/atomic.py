"""One way to write a whole file that another run reads: all of it or none of it, durable, with the usual mode.

    with atomic_write(path, "wb") as f: torch.save(obj, f)
    atomic_write_text(path, text)
    atomic_write_bytes(path, data)

A temp file in the same folder (the same filesystem, so the rename is atomic), flushed and fsynced, given the mode a
plain ``open`` would give it (0666 less the umask; ``mkstemp`` makes 0600), renamed over ``path`` (``os.replace``),
then the folder fsynced so that the rename itself survives a power cut. An exception or a crash part-way leaves the
previous file under that name intact, and the temp file is removed. The parent folder is created if needed.

Files written record by record (answer jsonl, metrics CSVs) are append logs with their own recovery
(``common/jsonl_store.py``, ``dvi/metrics.py``), not whole-file writes.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path


@functools.cache
def file_mode() -> int:
    """The mode ``open`` gives a new file in this process: 0666 less the umask (read once: setting the umask to
    read it is process-wide)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(d) -> None:
    """Make a rename in folder ``d`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = None):
    """A file object to write ``path`` through (``mode`` "w" or "wb"); it replaces ``path`` when the block ends
    without an exception, and never otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)
