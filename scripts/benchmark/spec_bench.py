"""Spec-Bench's own numbers, pure: its answer-file shape and the semantics of its ``evaluation/speed.py`` and
``evaluation/equal.py`` (hemingkx/Spec-Bench), so our table reads as theirs and their scripts read our files.

Answer files (one json line per question, file order = question order), named as theirs:

    OUT/data/spec_bench/model_answer_temp0_run_{r}/{model}-{method}-{dtype}-temp-0.0.jsonl   (baseline: "vanilla";
    sampled at temperature T: model_answer_tempT_run_{r}/...-temp-T.jsonl)
    {"question_id", "category", "answer_id", "model_id", "tstamp",
     "choices": [{"index": 0, "turns", "decoding_steps", "new_tokens", "wall_time", "accept_lengths",
                  "recounted_tokens"}]}          (recounted_tokens: ours, ignored by their scripts; see ``recount``)

speed.py, per task (a category, ``mt_bench`` = its eight MT-bench categories, or ``overall``):

    speed of a method      mean over questions of sum(new_tokens) / sum(wall_time)
    speed of the baseline  mean over questions of
                           (sum over turns of len(tokenizer(turn).input_ids) - 1) / sum(wall_time)
                           (its tokens re-counted from the answer text; the -1 drops Vicuna's BOS, and drops a real
                           token where the tokenizer adds none, as SmolLM2's does)
    speedup                speed of the method / speed of the baseline
    mean accepted tokens   mean of every accept_lengths entry of every question, pooled (over runs too)
    several runs           mean and standard deviation (ddof = 1) of the per-run speeds and speedups

equal.py: two answer files are equal when ``str(turns)`` of each line pair (zip over the file order) are equal.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text

MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
TASKS = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag", "overall")
BASELINE_NAME = "vanilla"  # Spec-Bench's name for plain autoregressive decoding


@dataclass
class Speed:
    tokens_per_s: float | None
    baseline_tokens_per_s: float | None
    speedup: float | None
    accept_lengths: list


def select(answers: list[dict], task: str) -> list[dict]:
    """The answers of ``task``: one category, ``mt_bench`` (its eight categories) or ``overall`` (all)."""
    if task == "overall":
        return list(answers)
    cats = MT_BENCH if task == "mt_bench" else (task,)
    return [a for a in answers if a.get("category") in cats]


def recount(answer: dict, tokenizer=None) -> int:
    """speed.py's token count of an answer: per turn ``len(tokenizer(turn).input_ids) - 1``, summed. Without a
    tokenizer: the count stored when the answer was written (``choices[0]["recounted_tokens"]``)."""
    c = answer["choices"][0]
    if tokenizer is None:
        return sum(c["recounted_tokens"])
    return sum(len(tokenizer(t).input_ids) - 1 for t in c["turns"])


def speed(answers: list[dict], base_answers: list[dict], tokenizer=None) -> Speed:
    """speed.py's numbers for one task: ``answers`` of the method, ``base_answers`` of the baseline."""
    speeds = [sum(a["choices"][0]["new_tokens"]) / sum(a["choices"][0]["wall_time"]) for a in answers]
    base = [recount(a, tokenizer) / sum(a["choices"][0]["wall_time"]) for a in base_answers]
    tps, tps0 = _mean(speeds), _mean(base)
    accept = [x for a in answers for x in a["choices"][0]["accept_lengths"] or ()]
    return Speed(tps, tps0, tps / tps0 if tps is not None and tps0 else None, accept)


def mean_report(runs: list[Speed]) -> dict:
    """Mean and sample standard deviation (None for one run) over runs; accept lengths pooled over all runs."""
    out = {}
    for key in ("tokens_per_s", "baseline_tokens_per_s", "speedup"):
        vals = [getattr(r, key) for r in runs if getattr(r, key) is not None]
        out[key] = _mean(vals)
        out[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else None
    pooled = [x for r in runs for x in r.accept_lengths]
    out["mean_accepted"] = _mean(pooled)
    return out


def equal(answers_a: list[dict], answers_b: list[dict]) -> bool:
    """equal.py: ``str(turns)`` of each pair of lines, in file order (zip: the shorter file decides)."""
    return all(str(a["choices"][0]["turns"]) == str(b["choices"][0]["turns"]) for a, b in zip(answers_a, answers_b))


def answer_file(root, run: int, model_id: str, method: str, dtype: str, temperature: float = 0.0) -> Path:
    label = Path(str(model_id)).name.replace(".gguf", "") or str(model_id)
    name = BASELINE_NAME if method == "baseline" else method
    t = float(temperature)
    folder = Path(root) / "data" / "spec_bench" / f"model_answer_temp{t:g}_run_{run}"
    return folder / f"{label}-{name}-{dtype}-temp-{t}.jsonl"


def write_answers(path, answers: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))


def read_answers(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def from_raw(records: list[dict], method: str, model_id: str = "") -> list[dict]:
    """The benchmark's raw records (``scripts/benchmark/methods.decode_question``) as ``method``'s answer records.
    Records written before the answer texts, accept lengths and re-counts were kept get empty turns, no accept
    lengths and their new-token counts as the re-count."""
    from evaluation.answers import answer_record

    out = []
    for r in records:
        m = r["methods"].get(method)
        if m is None:
            continue
        accept = [x for turn in m.get("accept_lengths") or () for x in turn or ()]
        a = answer_record(r["question_id"], model_id, m.get("turns", []), m["new_tokens"], m["wall_s"], accept,
                          m["passes"])
        a = {"question_id": a.pop("question_id"), "category": r.get("category"), **a}
        a["choices"][0]["recounted_tokens"] = m.get("recounted_tokens", m["new_tokens"])
        out.append(a)
    return out
