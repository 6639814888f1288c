"""common.atomic: a whole file or the previous one, fsynced (file and folder), with the mode a plain open gives."""
import os
import stat

import pytest

from common.atomic import atomic_write, atomic_write_bytes, atomic_write_text, file_mode


def test_writes_replace_with_the_usual_mode_and_sync(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd)))
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == file_mode() == 0o666 & ~umask  # not mkstemp's 0600
    assert synced == [False, True, False, True]  # the file, then its folder (the rename), each time


def test_an_exception_part_way_keeps_the_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "kept")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("crash")
    assert path.read_text() == "kept" and os.listdir(tmp_path) == ["a.txt"]
