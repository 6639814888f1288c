"""A question file in category round-robin order, so that any prefix of it mixes the categories.

Spec-Bench's file is grouped by category (MT-bench's eight, then 80 each of translation, summarization, qa,
math_reasoning, rag): a prefix of it would train on one or two categories only. The round-robin order takes the
first question of each category (first-seen order), then the second of each, and so on; within a category the file
order is kept. No randomness: the same file gives the same mix.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text


def round_robin(questions: list[dict]) -> list[dict]:
    by_cat: dict[str, list[dict]] = {}
    for q in questions:
        by_cat.setdefault(str(q.get("category")), []).append(q)
    longest = max((len(v) for v in by_cat.values()), default=0)
    return [qs[i] for i in range(longest) for qs in by_cat.values() if i < len(qs)]


def write_questions(path: Path, questions: list[dict]) -> Path:
    """Write ``questions`` as a question jsonl, unless the file already holds exactly that (its digest stays)."""
    text = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions)
    path = Path(path)
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path
