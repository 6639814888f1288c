"""question -> tokens: read Spec-Bench / MT-bench question files; their chat prompts are rendered by
``kangaroo.chat.chat_prompt_ids`` (re-exported here for the drivers and scripts).

Question files are jsonl: {"question_id": .., "category": .., "turns": ["first user turn", "second", ...]}.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.errors import UserError
from kangaroo.chat import chat_prompt_ids

__all__ = ["chat_prompt_ids", "load_questions", "select_categories"]


def load_questions(path: str | Path, begin: int | None = None, end: int | None = None,
                   categories: list[str] | None = None, exclude: list[str] | None = None) -> list[dict]:
    """The file's questions, those of ``categories`` only and none of ``exclude`` (when given), then ``[begin:end]``
    of what is left: the range indexes the selected questions."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"question file {path} does not exist: pass --question-file PATH")
    questions = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                if not isinstance(q.get("turns"), list) or "question_id" not in q:
                    raise ValueError("needs question_id and a list of turns")
            except (json.JSONDecodeError, ValueError, AttributeError) as e:
                raise UserError(f"{path}:{lineno} is not a question record ({e}); fix or remove that line") from e
            questions.append(q)
    return select_categories(questions, categories, exclude, path)[begin:end]


def select_categories(questions: list[dict], categories: list[str] | None, exclude: list[str] | None,
                      path: str | Path = "the question file") -> list[dict]:
    """Questions whose ``category`` is in ``categories`` (all if None) and not in ``exclude``, file order kept.
    A category the file does not hold is a mistake (a typo would silently select or exclude nothing)."""
    if not categories and not exclude:
        return questions
    present = list(dict.fromkeys(str(q.get("category")) for q in questions))
    unknown = [c for c in (*(categories or ()), *(exclude or ())) if c not in present]
    if unknown:
        raise UserError(f"category {unknown[0]!r} is not in {path}: pick from {', '.join(present)}")
    keep = set(categories or present) - set(exclude or ())
    return [q for q in questions if str(q.get("category")) in keep]
