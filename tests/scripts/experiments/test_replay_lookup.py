"""python -m scripts.experiments replay_lookup: the verifier's verdict on a recorded output, and a replay in which the
memory drafts a repeated output from the first time it was seen."""
import json

import pytest

from kangaroo.blocks import Draft
from kangaroo.verify_cost import CostCurve
from scripts.experiments.replay import lookup as rl

FLAT = CostCurve([1.0] * 8, [10.0] * 8, 0.5)


def test_verdict_accepts_the_matching_prefix_and_commits_the_greedy_token():
    out = [5, 6, 7, 8]
    b = rl.verdict(Draft([6, 7, 9], None, None, [1.0] * 3, source="ngram"), out, 1)
    assert (b.accepted, b.committed, b.source) == (2, [6, 7, 8], "ngram")
    end = rl.verdict(Draft([8, 1], None, None, [1.0] * 2, source="memory"), out, 3)  # past the output's end
    assert (end.accepted, end.committed) == (1, [8, -1])


def test_replay_memory_drafts_a_repeated_output():
    out = list(range(10, 40))  # no repeat inside: prompt lookup finds nothing
    data = [([1, 2], out), ([3, 4], list(range(50, 60))), ([1, 2], out)]
    cold = rl.replay("ngram", data, FLAT, ar_ms=11.0)
    mem = rl.replay("ngram,memory", data, FLAT, ar_ms=11.0, min_match=2)
    assert cold["tokens_per_pass"] == 1.0 and cold["speedup"] == pytest.approx(1.0)
    by = {r["source"]: r for r in mem["sources"]}
    assert by["memory"]["blocks"] >= 1 and by["memory"]["committed"] >= 25  # the third request, nearly in one go
    passes = sum(r["blocks"] for r in mem["sources"])
    assert mem["tokens_per_pass"] == pytest.approx(70 / passes) and mem["speedup"] > 1.5
    seeded = rl.replay("ngram,memory", data[2:], FLAT, ar_ms=11.0, seed=[out], min_match=2)
    # two greedy steps until a 2-token suffix matches, then 4 blocks of 6 drafts + 1: 30 tokens in 6 passes
    assert seeded["seeded"] and seeded["tokens_per_pass"] == 5.0


def test_engine_curve_reads_the_profile():
    cost, ar = rl.engine_curve()
    assert 30 < ar < 60 and cost.max_tokens == 7 and cost.block_ms(1, "ngram") > cost.block_ms(0, "ngram")


def test_main_writes_the_report(tiny_model_dir, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "category": "a", "turns": ["Hi"]}) + "\n")
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"question_id": 1, "baseline_ids": [[7, 8, 9, 7, 8, 9]]}) + "\n")
    assert rl.main(["--raw", str(raw), "--model-id", str(tiny_model_dir), "--question-file", str(q),
                    "--out", str(tmp_path / "o")]) == 0
    md = (tmp_path / "o" / "replay.md").read_text()
    assert "| ngram | - | no |" in md and md.count("| ngram,memory |") == 3
    assert len(json.loads((tmp_path / "o" / "replay.json").read_text())["results"]) == len(rl.VARIANTS)
