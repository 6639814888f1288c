"""Bad inputs to the drivers end with one line naming the problem and the fix, exit code 2, and nothing lost."""
import json
import os

import pytest

from evaluation import inference_baseline, inference_kangaroo
from evaluation.answers import done_question_ids


def run(mod, argv, capsys):
    try:
        rc = mod.run_main(mod.main, argv)
    except SystemExit as e:  # flag errors exit from the parser, as on the command line
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err.strip()


def one_line(err, match):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err


@pytest.fixture
def base_argv(tiny_model_dir, tmp_path):
    return ["--model-id", str(tiny_model_dir), "--device", "cpu", "--no-progress", "--max-new-tokens", "6",
            "--answer-file", str(tmp_path / "a.jsonl")]


def sharegpt(path, lines):
    path.write_text("".join(lines))
    return path


def test_sharegpt_without_a_usable_prompt_fails_and_writes_no_checkpoint(base_argv, tmp_path, capsys):
    p = sharegpt(tmp_path / "bad.jsonl", ["not json\n", "\n", '{"conversations": [{"from": "gpt", "value": "x"}]}\n'])
    rc, _, err = run(inference_kangaroo, base_argv + ["--prompts-jsonl", str(p), "--dvi-online", "true",
                                                      "--save-lora-path", str(tmp_path / "ck")], capsys)
    assert rc == 2
    one_line(err, "holds no usable prompt ([sharegpt] 1 malformed lines and 1 blank lines skipped")
    assert not (tmp_path / "ck" / "final.pt").exists()


def test_skip_summary_is_printed_when_max_prompts_stops_early(base_argv, tmp_path, capsys):
    conv = json.dumps({"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"}]})
    p = sharegpt(tmp_path / "s.jsonl", ["garbage\n", conv + "\n", conv + "\n", conv + "\n"])
    rc, _, err = run(inference_kangaroo, base_argv + ["--prompts-jsonl", str(p), "--max-prompts", "1"], capsys)
    assert rc == 0 and "[sharegpt] 1 malformed lines skipped" in err


def test_online_run_with_nothing_left_keeps_the_checkpoint(base_argv, tmp_path, capsys):
    conv = json.dumps({"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"}]})
    p = sharegpt(tmp_path / "s.jsonl", [conv + "\n"])
    argv = base_argv + ["--prompts-jsonl", str(p), "--dvi-online", "true", "--save-lora-path", str(tmp_path / "ck"),
                        "--metrics-out", str(tmp_path / "m"), "--dvi-batch-size", "1", "--dvi-topk", "8"]
    assert run(inference_kangaroo, argv, capsys)[0] == 0
    final = tmp_path / "ck" / "final.pt"
    before = (final.read_bytes(), final.stat().st_mtime_ns)
    rc, out, _ = run(inference_kangaroo, argv, capsys)  # every prompt answered: resumes, decodes nothing
    assert rc == 0 and "resuming from" in out and (final.read_bytes(), final.stat().st_mtime_ns) == before


def test_resume_with_another_ablation_is_refused(base_argv, tmp_path, capsys):
    conv = json.dumps({"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"}]})
    p = sharegpt(tmp_path / "s.jsonl", [conv + "\n"] * 2)
    argv = base_argv + ["--prompts-jsonl", str(p), "--max-prompts", "1", "--dvi-online", "true", "--save-lora-path",
                        str(tmp_path / "ck"), "--metrics-out", str(tmp_path / "m"), "--dvi-topk", "8",
                        "--dvi-batch-size", "1"]
    assert run(inference_kangaroo, argv, capsys)[0] == 0
    before = (tmp_path / "ck" / "final.pt").read_bytes()
    rc, _, err = run(inference_kangaroo, argv + ["--max-prompts", "2", "--dvi-ablation", "kd_only"], capsys)
    assert rc == 2
    one_line(err, "trained with --dvi-ablation full, this run has kd_only: pass --dvi-ablation full")
    assert (tmp_path / "ck" / "final.pt").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_save_path_fails_before_training(base_argv, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    conv = json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    p = sharegpt(tmp_path / "s.jsonl", [conv + "\n"])
    rc, _, err = run(inference_kangaroo, base_argv + ["--prompts-jsonl", str(p), "--dvi-online", "true",
                                                      "--save-lora-path", str(ro / "ck")], capsys)
    assert rc == 2
    one_line(err, "is not a writable folder")
    assert not (tmp_path / "a.jsonl").exists()  # nothing was decoded


def test_save_path_that_is_a_file_fails_before_training(base_argv, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    conv = json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    p = sharegpt(tmp_path / "s.jsonl", [conv + "\n"])
    rc, _, err = run(inference_kangaroo, base_argv + ["--prompts-jsonl", str(p), "--dvi-online", "true",
                                                      "--save-lora-path", str(f)], capsys)
    assert rc == 2 and f.read_text() == "keep me"
    one_line(err, "is not a writable folder")
    assert not (tmp_path / "a.jsonl").exists()


def test_metrics_out_on_plain_kangaroo_writes_csvs(base_argv, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "turns": ["Hello"]}) + "\n")
    rc, out, _ = run(inference_kangaroo, base_argv + ["--question-file", str(q), "--metrics-out",
                                                      str(tmp_path / "m")], capsys)
    assert rc == 0
    rows = (tmp_path / "m" / "acceptance.csv").read_text().splitlines()
    assert rows[0].startswith("step,acc@1") and len(rows) > 1 and (tmp_path / "m" / "speed.csv").exists()


def test_prompt_longer_than_the_positions_is_one_line(base_argv, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "turns": ["Hi"]}) + "\n"
                 + json.dumps({"question_id": 7, "turns": ["word " * 600]}) + "\n")
    rc, _, err = run(inference_baseline, base_argv + ["--question-file", str(q)], capsys)
    assert rc == 2
    one_line(err, "question 7: its prompt is")
    assert "lower --max-new-tokens" in err and done_question_ids(tmp_path / "a.jsonl") == {1}


def test_cut_first_answer_line_is_redone_and_foreign_files_are_untouched(base_argv, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "turns": ["Hello"]}) + "\n")
    ans = tmp_path / "a.jsonl"
    ans.write_text('{"question_id": 1, "answer_id": "x", "choi')  # the only line, cut by a crash
    rc, _, _ = run(inference_baseline, base_argv + ["--question-file", str(q)], capsys)
    assert rc == 0 and [json.loads(line)["question_id"] for line in ans.read_text().splitlines()] == [1]
    ans.write_text("my notes, no newline")
    rc, _, err = run(inference_baseline, base_argv + ["--question-file", str(q)], capsys)
    assert rc == 2 and ans.read_text() == "my notes, no newline"
    one_line(err, "is not an answer record")


def test_complete_last_record_without_newline_is_kept(base_argv, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "turns": ["Hello"]}) + "\n"
                 + json.dumps({"question_id": 2, "turns": ["Bye"]}) + "\n")
    ans = tmp_path / "a.jsonl"
    assert run(inference_baseline, base_argv + ["--question-file", str(q), "--question-end", "1"], capsys)[0] == 0
    ans.write_text(ans.read_text().rstrip("\n"))  # e.g. an editor dropped the final newline
    assert run(inference_baseline, base_argv + ["--question-file", str(q)], capsys)[0] == 0
    assert [json.loads(line)["question_id"] for line in ans.read_text().splitlines()] == [1, 2]


def test_empty_question_selection_is_one_line(base_argv, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "turns": ["Hello"]}) + "\n")
    rc, _, err = run(inference_baseline, base_argv + ["--question-file", str(q), "--question-begin", "5"], capsys)
    assert rc == 2
    one_line(err, "no question selected from")
