"""python -m scripts.experiments ceiling over learnability --costs --eval-raw: the ceiling of a trained drafter, end
to end on a tiny model, its table, and bad input in one line."""
import argparse
import json

import pytest
import torch

from evaluation.cli import add_exitlayer_arg, add_model_args
from common.command_line import run_main
from scripts.experiments.ceiling.policies import StepCosts, lookup_agreement
from scripts.experiments.ceiling import draft_ceiling, learnability
from scripts.experiments.teacher_forced import load_answer_data, questions_data


def sharegpt(path, n=3):
    path.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": f"Tell me fact {i}."},
                                                          {"from": "gpt", "value": "ok"}]}) + "\n" for i in range(n)))
    return str(path)


def fake_profile(path):
    costs = {"ar_ms": 10.0, "deep_ms": {"1": 9.0, "2": 11.0}, "draft": [{"token_ms": 1.0}]}
    path.write_text(json.dumps({"costs": costs}))


def test_probe_reports_each_drafter_ceiling_and_the_table_reads_it(tiny_model_dir, tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": f"sharegpt-{i}", "token_ids": [[5, 17, 300, 9, 12, 40]]})
                               + "\n" for i in range(3)))
    questions, raw = tmp_path / "question.jsonl", tmp_path / "raw.jsonl"
    outputs = {1: [7, 8, 9, 7, 8, 9], 2: [7, 8, 9, 7, 8, 9, 7, 8], 3: [5, 6, 5]}
    questions.write_text("".join(json.dumps({"question_id": i, "category": "a", "turns": ["Hi " * i]}) + "\n"
                                 for i in outputs))
    raw.write_text("".join(json.dumps({"question_id": i, "baseline_ids": [out], "methods": {
        "baseline": {"new_tokens": [len(out)], "wall_s": [0.1 * len(out) + 0.05 * i]}}}) + "\n"
        for i, out in outputs.items()))
    out = tmp_path / "ceiling"
    (out / "k2" / "profile").mkdir(parents=True)
    fake_profile(out / "k2" / "profile" / "block_costs.json")  # kept: --reuse-profiles
    assert draft_ceiling.main(["--model-id", str(tiny_model_dir), "--answers", str(answers), "--exitlayers", "2",
                               "--train-steps", "2", "--eval-raw", str(raw), "--question-file", str(questions),
                               "--prompts-jsonl", sharegpt(tmp_path / "sharegpt.jsonl"), "--reuse-profiles",
                               "--out", str(out)]) == 0
    rec = json.loads((out / "k2" / "probe" / "probe.json").read_text())
    assert rec["positions"] == 18 and StepCosts(**rec["costs"]) == StepCosts(0.1, 0.2).with_shallow_rows(4, 2)
    ceil = rec["results"][0]["ceiling"]
    assert set(draft_ceiling.COLUMNS) <= set(ceil)
    assert 0 <= ceil["agreement top-1"] <= ceil["agreement top-2"] <= 1
    assert ceil["foresight: only agreeing drafts"] >= ceil["always draft one"] > 0
    bench = rec["results"][0]["benchmark"]
    assert set(draft_ceiling.BENCH_COLUMNS) <= set(bench)
    pairs = questions_data(raw, str(tiny_model_dir), str(questions))
    lookups = lookup_agreement(pairs)
    assert bench["agreement ngram"] == pytest.approx(float(lookups["ngram"][0].float().mean()))
    assert bench["agreement memory"] == pytest.approx(float(lookups["memory"][0].float().mean()))
    assert bench["agreement memory"] > 0
    assert bench["foresight: self + ngram + memory"] >= bench["foresight: ngram + memory"] > 1
    # prefill dilutes: nearer 1 than the decode alone
    assert 1 < bench["foresight: ngram + memory, prefill included"] < bench["foresight: ngram + memory"]
    (out / "table.md").unlink()
    assert draft_ceiling.main(["--report-only", "--exitlayers", "2", "--out", str(out)]) == 0  # from the probes
    md = (out / "table.md").read_text()
    assert "--report-only" in md  # the command
    assert sum(line.startswith("| 2 | 0.100 | 0.200 | 0.400 |") for line in md.splitlines()) == 2


def test_collect_gives_the_verifier_confidence_before_each_position(tiny_model_dir, tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "sharegpt-0", "token_ids": [[5, 17, 300, 9]]}) + "\n")
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    add_exitlayer_arg(ap)
    args = ap.parse_args(["--model-id", str(tiny_model_dir), "--device", "cpu", "--exitlayer", "2"])
    args.prompts_jsonl = sharegpt(tmp_path / "sharegpt.jsonl", n=1)
    model, data = load_answer_data(args, str(answers), topk=49152)  # the whole vocabulary
    hk, idx, val, top1, before = data[0]
    assert hk.shape[0] == idx.shape[0] == before.shape[0] == 4
    assert ((before > 0) & (before <= 1)).all()
    # the confidence in the token committed before position t is the verifier's top-1 probability at t - 1
    # (the top-K logits here are all of them, in fp16)
    assert before[1:].tolist() == pytest.approx(torch.softmax(val[:-1].float(), -1)[:, 0].tolist(), rel=0.02)


def test_bad_exit_layers_and_bad_costs_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        draft_ceiling.main(["--answers", "a.jsonl", "--exitlayers", "2,x", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--exitlayers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        draft_ceiling.main(["--out", str(tmp_path)])
    assert e.value.code == 2 and "--answers is needed" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert run_main(learnability.main, ["--answers", "a.jsonl", "--costs", str(tmp_path / "bad.json")]) == 2
    assert "not a block_costs.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        learnability.main(["--answers", "a.jsonl", "--eval-raw", str(tmp_path / "missing.jsonl")])
    assert e.value.code == 2 and "--eval-raw" in capsys.readouterr().err
