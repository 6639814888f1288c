"""The held-out prompts' token ids, in order: ``HeldoutConfig.file`` from its first line, or by default the bundled
ShareGPT (``assets/sharegpt.jsonl``) from its prompt ``HELDOUT_SKIP`` (2000) on.

No run trains there: the main job (``scripts/main.sh``) trains on the first ``--max-prompts`` (150) prompts of that
file, the server's load run (``python -m scripts.serve_load``) serves its first 300 + 4 x 24, the benchmark's
``--train-if-missing`` and the sweeps train on the first 100-300, and ``build_subvocab`` counts tokens from line 1000
on (prompt 2000 is near line 600). A file may hold ShareGPT conversations (its human -> gpt exchanges, as the drivers'
``--prompts-jsonl`` reads them), question records (the first of their ``turns``) or ``{"prompt_ids": [...]}``
records (token ids: no tokenizer needed). Text is rendered with the model's chat template (``kangaroo/chat.py``),
as the drivers and the server render a question.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from common.errors import UserError
from dvi.config import HELDOUT_SKIP, HELDOUT_SOURCE, HeldoutConfig


def heldout_prompts(cfg: HeldoutConfig, tokenizer, model_id: str) -> Iterator[list[int]]:
    """Token ids of the held-out prompts, in order: ``cfg.file`` from its first line, or the bundled ShareGPT from
    its prompt ``HELDOUT_SKIP`` on. Text is rendered with the model's chat template (``kangaroo/chat.py``), as
    the drivers and the server render a question; ``prompt_ids`` records need no tokenizer."""
    for kind, value in _records(source_path(cfg), bool(cfg.file)):
        if kind == "ids":
            yield value
            continue
        if tokenizer is None:
            raise HeldoutSkipped("the held-out prompts are text and no tokenizer was given: pass one, or a "
                                 "--heldout-file of {\"prompt_ids\": [...]} records, or --heldout-positions 0")
        from kangaroo.chat import chat_prompt_ids

        yield chat_prompt_ids(tokenizer, [{"role": "user", "content": value}], model_id)[0].tolist()


def source_path(cfg: HeldoutConfig) -> Path:
    """The file the prompts come from: ``cfg.file``, or the bundled ShareGPT of this checkout."""
    return Path(cfg.file) if cfg.file else Path(__file__).resolve().parent.parent / HELDOUT_SOURCE


class HeldoutSkipped(UserError):
    """The held-out set is skipped, said in one line: text prompts without a tokenizer (the library given token ids
    only), or the default prompts (the bundled ShareGPT) not fetched. A ``--heldout-file`` that is missing is an
    error instead: the user asked for it."""


def _records(source: Path, given: bool) -> Iterator[tuple[str, object]]:
    from data.sharegpt_stream import iter_sharegpt_jsonl

    if not source.is_file():
        fix = "fetch the assets (bash scripts/setup.sh), or pass --heldout-file PATH or --heldout-positions 0"
        raise (UserError if given else HeldoutSkipped)(f"held-out prompts {source} do not exist: {fix}")
    if not given or _first_record(source).get("conversations") is not None:
        for i, (prompt, _) in enumerate(iter_sharegpt_jsonl(str(source))):
            if given or i >= HELDOUT_SKIP:
                yield "text", prompt
        return
    with open(source, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield _record(json.loads(line) if _is_json(line) else None, f"--heldout-file {source}:{lineno}")


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def _first_record(path: Path) -> dict:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line) if _is_json(line) else None
                return rec if isinstance(rec, dict) else {}
    raise UserError(f"--heldout-file {path} holds no prompt: pass a jsonl with one prompt record per line")


def _record(rec, where: str) -> tuple[str, object]:
    ids = rec.get("prompt_ids") if isinstance(rec, dict) else None
    if isinstance(ids, list) and ids and all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        return "ids", ids
    turns = rec.get("turns") if isinstance(rec, dict) else None
    if isinstance(turns, list) and turns and isinstance(turns[0], str) and turns[0].strip():
        return "text", turns[0]
    raise UserError(f"{where} is not a prompt record: one JSON object per line with \"prompt_ids\" (token ids), "
                    "\"turns\" (text; the first is used) or ShareGPT \"conversations\"")
