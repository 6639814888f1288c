"""The pruned drafter vocabulary (FR-Spec, arXiv 2502.14856): the N most frequent tokens of the model's own
tokenizer over ShareGPT responses. The drafter head projects onto those N rows only; the verifier keeps the
full vocabulary, so the output stays exact (a token outside the N is simply never drafted).

    counts = count_tokens(tokenizer, "assets/sharegpt.jsonl")       # [V] int64, "gpt" turns only
    save_counts(path, counts, meta) / load_counts(path)              # .npz: counts + a JSON meta string
    ids = top_ids(counts, N, always=eos_ids)                         # [N], most frequent first
    coverage(token_lists, ids)                                        # share of tokens inside
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.atomic import atomic_write

DEFAULT_SKIP = 1000  # the first ShareGPT lines hold the prompts runs train and evaluate on: not counted


def iter_responses(jsonl, skip_lines: int = DEFAULT_SKIP, max_lines: int | None = None):
    """The text of every "gpt" turn of a ShareGPT jsonl, from line ``skip_lines`` on."""
    with open(jsonl, "rb") as f:
        for i, raw in enumerate(f):
            if i < skip_lines:
                continue
            if max_lines is not None and i >= skip_lines + max_lines:
                return
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            for t in (rec.get("conversations") or []) if isinstance(rec, dict) else []:
                if isinstance(t, dict) and t.get("from") == "gpt" and isinstance(t.get("value"), str):
                    yield t["value"]


def count_tokens(tokenizer, jsonl, vocab_size: int, skip_lines: int = DEFAULT_SKIP,
                 max_lines: int | None = None, batch: int = 256) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    buf: list[str] = []

    def flush():
        for ids in tokenizer(buf, add_special_tokens=False)["input_ids"]:
            ids = np.asarray(ids, dtype=np.int64)
            counts[:] += np.bincount(ids[ids < vocab_size], minlength=vocab_size)
        buf.clear()

    for text in iter_responses(jsonl, skip_lines, max_lines):
        buf.append(text)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return counts


def save_counts(path, counts: np.ndarray, meta: dict) -> Path:
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, counts=counts, meta=np.array(json.dumps(meta)))
    return path


def load_counts(path) -> tuple[np.ndarray, dict]:
    with np.load(path) as z:
        return z["counts"].astype(np.int64), json.loads(str(z["meta"]))


def top_ids(counts: np.ndarray, n: int, always=()) -> np.ndarray:
    """The ``n`` most frequent ids (ties: lower id first), the ``always`` ids (e.g. EOS) included."""
    if not 1 <= n <= len(counts):
        raise ValueError(f"sub-vocabulary size {n} outside 1..{len(counts)}")
    order = np.lexsort((np.arange(len(counts)), -counts))
    always = [int(a) for a in always if 0 <= int(a) < len(counts)]
    rest = [int(i) for i in order if int(i) not in set(always)]
    return np.asarray((always + rest)[:n], dtype=np.int64)


def coverage(token_lists, ids) -> float:
    keep = set(int(i) for i in ids)
    total = inside = 0
    for toks in token_lists:
        total += len(toks)
        inside += sum(int(t) in keep for t in toks)
    return inside / total if total else float("nan")


def default_counts_path(model_id: str) -> Path:
    name = Path(str(model_id).rstrip("/\\")).name.replace(".gguf", "")
    return Path(__file__).resolve().parent.parent / "data" / "subvocab" / f"{name}.counts.npz"
