"""OUT/raw.jsonl, one record per question (a resumable ``common.jsonl_store.JsonlStore``: a rerun skips the
questions there, a cut last line is redone), and OUT/config.json, the settings a resumed run must keep."""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from common.jsonl_store import JsonlStore
from evaluation.cli import fail

# settings that change what a question's record holds: a resumed run must keep them
CHECKED = ("model_id", "question_file", "all_turns", "max_new_tokens", "exitlayer", "threshold", "steps",
           "load_lora", "methods", "device", "dtype", "threads", "drafter", "draft_policy", "drafter_vocab",
           "ngram_min", "ngram_max")


def raw_store(out) -> JsonlStore:
    return JsonlStore(Path(out) / "raw.jsonl", what="benchmark record", key="question_id")


def check_config(out: Path, config: dict, overwrite: bool) -> None:
    """Keep OUT/config.json; refuse to resume a run made with other settings."""
    path = out / "config.json"
    if overwrite:
        raw_store(out).reset()
        path.unlink(missing_ok=True)
    if path.exists() and (out / "raw.jsonl").exists():
        old = json.loads(path.read_text())
        diff = [k for k in CHECKED if old.get(k) != config.get(k)]
        if diff:
            shown = "; ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            fail(f"{out} holds a run with other settings ({shown}): pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config, indent=2))
