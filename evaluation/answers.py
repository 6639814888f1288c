"""Spec-Bench style answer files: one json line per question, appended as soon as it is finished.

A rerun keeps what is there and skips those questions (``--overwrite`` starts afresh), so an interrupted long
run loses at most the question in flight: ``common/jsonl_store.py``.
"""
from __future__ import annotations

import time
from pathlib import Path

from common.jsonl_store import JsonlStore


def default_answer_file(bench_name: str, model_id: str, method: str) -> str:
    label = Path(str(model_id)).name.replace(".gguf", "") or str(model_id)
    return str(Path("runs") / "answers" / bench_name / f"{label}-{method}.jsonl")


def answer_store(path: str | Path) -> JsonlStore:
    return JsonlStore(path, what="answer record", key="question_id", ensure_ascii=False)


def done_question_ids(path: str | Path) -> set:
    return answer_store(path).done_ids()


def answer_record(question_id, model_id: str, turns: list[str], new_tokens: list[int], wall_time: list[float],
                  accept_lengths: list[int], decoding_steps: list[int], **extra) -> dict:
    import shortuuid

    return {"question_id": question_id, "answer_id": shortuuid.uuid(), "model_id": model_id,
            "choices": [{"index": 0, "turns": turns, "decoding_steps": decoding_steps, "new_tokens": new_tokens,
                         "wall_time": wall_time, "accept_lengths": accept_lengths}],
            "tstamp": time.time(), **extra}


def append_answer(path: str | Path, record: dict) -> None:
    answer_store(path).append(record)
