"""A resumable jsonl file: one json record per line, appended (and flushed) as soon as it is finished.

A rerun reads what is there and skips the ids already done; ``reset`` (``--overwrite``) starts afresh. An
interrupted write can leave a last line without its newline: if it does not parse and starts like this store's
records, it is a cut record (dropped, so its id is redone); a complete record without its newline is kept.
Any other line that is not a record means the file is someone else's: one clear line, and the file is not
touched. Used for answer files (``evaluation/answers.py``) and the benchmark's ``raw.jsonl``.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.errors import UserError


class JsonlStore:
    def __init__(self, path, what: str = "record", key: str = "question_id", ensure_ascii: bool = True):
        self.path, self.what, self.key, self.ensure_ascii = Path(path), what, key, ensure_ascii
        self.start = '{"%s": ' % key  # json.dumps of a record whose first field is ``key`` starts so

    def records(self) -> list[dict]:
        """Every complete record, in file order; a cut last line is left out."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    rec = self._parse(line, lineno)
                    if rec is not None:
                        out.append(rec)
        return out

    def done_ids(self) -> set:
        return {r[self.key] for r in self.records()}

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._end_last_line()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=self.ensure_ascii) + "\n")
            f.flush()

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_cut(self, line: str) -> bool:
        """A last line an interrupted write cut short: no newline, does not parse, starts like our records."""
        if line.endswith("\n") or not (line.startswith(self.start) or self.start.startswith(line)):
            return False
        try:
            json.loads(line)
        except json.JSONDecodeError:
            return True
        return False

    def _parse(self, line: str, lineno: int) -> dict | None:
        try:
            rec = json.loads(line)
            rec[self.key]
            return rec
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            if self.is_cut(line):
                return None  # its id is redone
            article = "an" if self.what[:1] in "aeiou" else "a"
            raise UserError(f"{self.path}:{lineno} is not {article} {self.what}: move the file away or pass "
                            "--overwrite") from None

    def _end_last_line(self) -> None:
        """Cut off a cut last record, or give a complete one its newline, so the next record starts a line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            start = data.rfind(b"\n") + 1
            if self.is_cut(data[start:].decode("utf-8", errors="replace")):
                f.truncate(start)
            else:
                f.write(b"\n")
