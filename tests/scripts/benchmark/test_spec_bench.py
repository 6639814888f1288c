"""scripts.benchmark.spec_bench: Spec-Bench's speed.py and equal.py semantics, on a fixed pair of answer files whose
numbers are worked out by hand below (a whitespace tokenizer that adds a BOS, like Vicuna's)."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.benchmark import spec_bench as sb

DATA = Path(__file__).parent / "data" / "spec_bench"
BASE, METHOD = DATA / "m-vanilla-float32-temp-0.0.jsonl", DATA / "m-dvi-float32-temp-0.0.jsonl"


def whitespace_tokenizer(text):
    return SimpleNamespace(input_ids=[1] + text.split())  # BOS + one id per word


def test_speed_py_semantics_on_a_fixed_answer_file():
    base, method = sb.read_answers(BASE), sb.read_answers(METHOD)
    # per-question speeds: method 8/1.0, 9/1.0, 4/0.25 = 8, 9, 16; baseline re-counted (words): 6/2, 8/2, 3/0.5
    r = sb.speed(method, base, whitespace_tokenizer)
    assert r.tokens_per_s == pytest.approx(11.0) and r.baseline_tokens_per_s == pytest.approx(13 / 3)
    assert r.speedup == pytest.approx(33 / 13) and sum(r.accept_lengths) / len(r.accept_lengths) == 21 / 8
    mt = sb.speed(sb.select(method, "mt_bench"), sb.select(base, "mt_bench"), whitespace_tokenizer)
    assert mt.speedup == pytest.approx(8.5 / 3.5) and len(mt.accept_lengths) == 7
    tr = sb.speed(sb.select(method, "translation"), sb.select(base, "translation"), whitespace_tokenizer)
    assert tr.speedup == pytest.approx(16 / 6) and tr.accept_lengths == [4]
    # the baseline against itself: its new tokens (5+3, 9, 4) over its re-counted ones
    own = sb.speed(base, base, whitespace_tokenizer)
    assert own.speedup == pytest.approx(((8 / 2 + 9 / 2 + 4 / 0.5) / 3) / (13 / 3))


def test_repeats_mean_and_sample_std_and_pooled_acceptance():
    runs = [sb.Speed(10.0, 5.0, 2.0, [1, 2]), sb.Speed(14.0, 5.0, 2.8, [3]), sb.Speed(12.0, 5.0, 2.4, [])]
    rep = sb.mean_report(runs)
    assert rep["speedup"] == pytest.approx(2.4) and rep["speedup_std"] == pytest.approx(0.4)
    assert rep["tokens_per_s_std"] == pytest.approx(2.0) and rep["baseline_tokens_per_s_std"] == 0.0
    assert rep["mean_accepted"] == 2.0  # (1 + 2 + 3) / 3, pooled over the runs
    assert sb.mean_report(runs[:1])["speedup_std"] is None


def test_equal_py_compares_answer_texts_in_file_order(tmp_path):
    base, method = sb.read_answers(BASE), sb.read_answers(METHOD)
    assert sb.equal(method, base)
    method[2]["choices"][0]["turns"] = ["x y w"]
    assert not sb.equal(method, base) and sb.equal(method[:2], base)  # zip: the shorter file decides


def test_answer_file_names_and_round_trip(tmp_path):
    path = sb.answer_file(tmp_path, 2, "assets/smollm2-135m-instruct", "baseline", "float32")
    folder = tmp_path / "data/spec_bench/model_answer_temp0_run_2"
    assert path == folder / "smollm2-135m-instruct-vanilla-float32-temp-0.0.jsonl"
    assert sb.answer_file(tmp_path, 1, "x.gguf", "dvi", "float16").name == "x-dvi-float16-temp-0.0.jsonl"
    answers = sb.read_answers(METHOD)
    assert sb.read_answers(sb.write_answers(path, answers)) == answers
    assert json.loads(path.read_text().splitlines()[0])["question_id"] == 1


def test_raw_records_as_answer_records():
    raw = [{"question_id": 7, "category": "qa", "methods": {"dvi": {
        "new_tokens": [3, 2], "wall_s": [0.5, 0.25], "passes": [2, 1], "accept_lengths": [[2, 1], [2]],
        "turns": ["one two", "three"], "recounted_tokens": [2, 1], "match": [True, True]}}}]
    (a,) = sb.from_raw(raw, "dvi", "m-dvi")
    c = a["choices"][0]
    assert (a["question_id"], a["category"], a["model_id"]) == (7, "qa", "m-dvi") and next(iter(a)) == "question_id"
    assert (c["turns"], c["new_tokens"], c["wall_time"], c["accept_lengths"], c["decoding_steps"]) == (
        ["one two", "three"], [3, 2], [0.5, 0.25], [2, 1, 2], [2, 1])
    assert sb.recount(a) == 3 and sb.from_raw(raw, "baseline") == []
