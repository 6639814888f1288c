"""OUT/raw.jsonl, one record per question (a resumable ``common.jsonl_store.JsonlStore``: a rerun skips the
questions there, a cut last line is redone; repeat r > 1 of ``--repeats``: OUT/raw_run{r}.jsonl), OUT/config.json,
the settings a resumed run must keep, and the Spec-Bench answer files made from the records."""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from common.jsonl_store import JsonlStore
from evaluation.cli import fail

# settings that change what a question's record holds: a resumed run must keep them
CHECKED = ("model_id", "question_file", "all_turns", "max_new_tokens", "exitlayer", "threshold", "steps",
           "load_lora", "methods", "device", "dtype", "threads", "drafter", "draft_policy", "drafter_vocab",
           "ngram_min", "ngram_max", "memory_tokens", "memory_seed", "temperature", "top_p", "top_k", "seed")


def raw_store(out, run: int = 1) -> JsonlStore:
    name = "raw.jsonl" if run == 1 else f"raw_run{run}.jsonl"
    return JsonlStore(Path(out) / name, what="benchmark record", key="question_id")


def write_answer_files(out, runs: list[list[dict]], methods: list[str], model_id: str, dtype: str,
                       temperature: float = 0.0) -> list[Path]:
    """Each repeat's records as one Spec-Bench answer file per method (``spec_bench.answer_file``), rewritten."""
    from scripts.benchmark import spec_bench as sb

    label = Path(str(model_id)).name.replace(".gguf", "") or str(model_id)
    return [sb.write_answers(sb.answer_file(out, r, model_id, m, dtype, temperature),
                             sb.from_raw(recs, m, f"{label}-{m}"))
            for r, recs in enumerate(runs, 1) for m in methods]


def check_config(out: Path, config: dict, overwrite: bool) -> None:
    """Keep OUT/config.json; refuse to resume a run made with other settings."""
    path = out / "config.json"
    if overwrite:
        for raw in [out / "raw.jsonl", *out.glob("raw_run*.jsonl")]:
            raw.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    if path.exists() and (out / "raw.jsonl").exists():
        old = json.loads(path.read_text())
        diff = [k for k in CHECKED if old.get(k) != config.get(k)]
        if diff:
            shown = "; ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            fail(f"{out} holds a run with other settings ({shown}): pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config, indent=2))
