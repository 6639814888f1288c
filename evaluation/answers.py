"""Spec-Bench style answer files: one json line per question, appended as soon as it is finished.

A rerun keeps what is there and skips those questions (``--overwrite`` starts afresh), so an interrupted long
run loses at most the question in flight.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from common.errors import UserError


RECORD_START = '{"question_id": '   # json.dumps of answer_record always starts so


def default_answer_file(bench_name: str, model_id: str, method: str) -> str:
    label = Path(str(model_id)).name.replace(".gguf", "") or str(model_id)
    return str(Path("runs") / "answers" / bench_name / f"{label}-{method}.jsonl")


def done_question_ids(path: str | Path) -> set:
    path = Path(path)
    if not path.exists():
        return set()
    done = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                done.add(json.loads(line)["question_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                if is_cut_record(line):
                    continue  # a last line cut by an interrupted write: that question is redone
                raise UserError(f"{path}:{lineno} is not an answer record: move the file away or pass --overwrite")
    return done


def is_cut_record(line: str) -> bool:
    """A last line that an interrupted write cut short: no newline, does not parse, and starts like our records
    (anything else is some other file, which must not be touched)."""
    if line.endswith("\n") or not (line.startswith(RECORD_START) or RECORD_START.startswith(line)):
        return False
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return True
    return False


def answer_record(question_id, model_id: str, turns: list[str], new_tokens: list[int], wall_time: list[float],
                  accept_lengths: list[int], decoding_steps: list[int], **extra) -> dict:
    import shortuuid

    return {"question_id": question_id, "answer_id": shortuuid.uuid(), "model_id": model_id,
            "choices": [{"index": 0, "turns": turns, "decoding_steps": decoding_steps, "new_tokens": new_tokens,
                         "wall_time": wall_time, "accept_lengths": accept_lengths}],
            "tstamp": time.time(), **extra}


def drop_partial_last_line(path: Path) -> None:
    """An interrupted write can leave a last line without its newline: an incomplete record is cut off (its
    question is redone), a complete one gets its newline, so the next record starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        if is_cut_record(data[start:].decode("utf-8", errors="replace")):
            f.truncate(start)
        else:
            f.write(b"\n")


def append_answer(path: str | Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_partial_last_line(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
