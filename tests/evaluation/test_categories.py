"""--categories / --exclude-categories: which questions a driver decodes (the filter comes before the index range)."""
import json

import pytest

from common.errors import UserError
from evaluation import cli, inference_baseline
from evaluation.questions import load_questions, select_categories

ROWS = [{"question_id": i, "category": c, "turns": [f"Question {i}?"]}
        for i, c in enumerate(["writing", "qa", "translation", "qa", "writing", "translation"], 1)]


@pytest.fixture
def qfile(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def ids(qs):
    return [q["question_id"] for q in qs]


def test_filter_then_range(qfile):
    assert ids(load_questions(qfile, categories=["qa", "translation"])) == [2, 3, 4, 6]
    assert ids(load_questions(qfile, exclude=["translation"])) == [1, 2, 4, 5]
    assert ids(load_questions(qfile, 1, 3, exclude=["translation"])) == [2, 4]   # the range indexes the kept ones
    assert ids(load_questions(qfile, None, 1, categories=["translation"])) == [3]
    assert ids(load_questions(qfile, categories=["qa", "writing"], exclude=["writing"])) == [2, 4]
    assert ids(load_questions(qfile, 1, 2)) == [2]                                # no filter: as before


def test_unknown_category_is_named_with_the_choices(qfile):
    for kw in ({"categories": ["translaton"]}, {"exclude": ["nope"]}):
        with pytest.raises(UserError, match="is not in .*pick from writing, qa, translation"):
            load_questions(qfile, **kw)
    assert select_categories(ROWS, None, None) is ROWS


def test_flags_parse_and_refuse_the_sharegpt_stream(qfile, tmp_path, capsys):
    a = cli.parse_args("kangaroo", ["--model-id", "m", "--device", "cpu", "--question-file", str(qfile),
                                    "--categories", "qa, translation,qa", "--exclude-categories", "writing"])
    assert a.categories == ["qa", "translation"] and a.exclude_categories == ["writing"]
    sharegpt = tmp_path / "s.jsonl"
    sharegpt.write_text(json.dumps({"id": "0", "conversations": [{"from": "human", "value": "Hi"},
                                                                 {"from": "gpt", "value": "Hello"}]}) + "\n")
    for argv in (["--categories", ","], ["--prompts-jsonl", str(sharegpt), "--categories", "qa"]):
        with pytest.raises(SystemExit) as e:
            cli.parse_args("kangaroo", ["--model-id", "m", "--device", "cpu", *argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and "categor" in err, err


def test_driver_decodes_only_the_selected_categories(tiny_model_dir, qfile, tmp_path, capsys):
    ans = tmp_path / "a.jsonl"
    argv = ["--model-id", str(tiny_model_dir), "--question-file", str(qfile), "--answer-file", str(ans),
            "--max-new-tokens", "2", "--device", "cpu", "--no-progress"]
    assert inference_baseline.main([*argv, "--exclude-categories", "translation", "--question-begin", "1"]) == 0
    assert [(r["question_id"], r["category"]) for r in map(json.loads, open(ans))] == [(2, "qa"), (4, "qa"),
                                                                                      (5, "writing")]
    capsys.readouterr()
    assert cli.run_main(inference_baseline.main, [*argv, "--categories", "poetry"]) == 2
    assert "'poetry' is not in" in capsys.readouterr().err
