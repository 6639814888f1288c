"""python -m scripts.experiments ablations: the report from hand-made metrics, its pure builders and flag checks, and
a real run on the tiny model folder (lossless, resumable)."""
import json

import pytest

from scripts.experiments import ablations as ra
from scripts.experiments.series import rolling_mean
from tests.scripts.metrics_fakes import fake_metrics


def fake_preset(out, name, blocks):
    """blocks: (drafted, accepted, wall_ms); acc@k and committed follow as the metrics logger writes them."""
    fake_metrics(out / name, [(d, a, None, ms) for d, a, ms in blocks])


def test_ablation_report_only_on_hand_made_csvs(tmp_path):
    out = tmp_path / "abl"
    fake_preset(out, "full", [(1, 0, 10), (2, 1, 10), (2, 2, 20), (2, 2, 10)])
    fake_preset(out, "kd_only", [(2, 0, 10), (2, 0, 10)])
    assert ra.main(["--report-only", "--out", str(out), "--window", "2", "--presets", "full,kd_only,pg_only"]) == 0
    md = (out / "table.md").read_text()
    # last 2 blocks: acc@1 1, committed 3, block_acc 1, 6 tokens / 30 ms; first 2: 0.5, 1.5, 0.25, 3 / 20 ms
    assert "| full | partial | 4 | 1.000 | 0.500 | 3.000 | 1.500 | 1.000 | 0.250 | 200.0 | 150.0 |" in md
    assert "| kd_only | partial | 2 | 0.000 | 0.000 | 1.000 | 1.000 | 0.000 | 0.000 | 100.0 | 100.0 |" in md
    assert "pg_only" in md and "| pg_only |" not in md  # listed as not run
    assert (out / "ablation_acceptance.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["presets"]["full"]["last"]["tokens_per_s"] == 200.0
    # a rebuild keeps the command of the run that made the folders
    summary = json.loads((out / "summary.json").read_text())
    summary["meta"].update(command="python -m scripts.experiments ablations --max-prompts 7", data="seven prompts")
    (out / "summary.json").write_text(json.dumps(summary))
    assert ra.main(["--report-only", "--out", str(out), "--window", "2"]) == 0
    md = (out / "table.md").read_text()
    assert "`python -m scripts.experiments ablations --max-prompts 7`" in md and "- data: seven prompts" in md
    assert "- report: python -m scripts.experiments ablations --report-only" in md
    with pytest.raises(SystemExit):
        ra.main(["--report-only", "--out", str(tmp_path / "empty")])


def test_ablation_pure_builders(tmp_path):
    assert rolling_mean([0, 1, None, 1, 0], 2) == [0, 0.5, 1, 1, 0.5]
    assert rolling_mean([None, None], 3) == [None, None]
    rows = [{"step": i, "acc@1": v} for i, v in enumerate([0, 1, 1], 1)]
    assert ra.acc1_curve(rows, 2) == ([1, 2, 3], [0, 0.5, 1])
    png = ra.plot_curves({"full": ([1, 2, 3], [0, 0.5, 1]), "pg_only": ([1], [None])}, 2, tmp_path / "a.png")
    assert png.stat().st_size > 0


def test_ablation_flags_are_checked(capsys):
    for argv in (["--presets", "full,nope"], ["--dvi-ablation", "full", "--model-id", "m", "--prompts-jsonl", "p"],
                 ["--out", "x"]):
        with pytest.raises(SystemExit) as e:
            ra.main(argv)
        assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def greedy_answers(model_dir, prompts_jsonl, n: int, max_new: int) -> list[list[int]]:
    """The plain greedy output (kangaroo.greedy) of the first n prompts of a ShareGPT jsonl: the reference."""
    from evaluation.eval_loop import sharegpt_questions
    from evaluation.questions import chat_prompt_ids
    from kangaroo.greedy import eos_ids_of, greedy_decode
    from kangaroo.model_loading import load_causal_lm, load_tokenizer

    tok, lm = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir), device="cpu", dtype="float32")
    eos = eos_ids_of(tok, lm.config)
    out = []
    for q in sharegpt_questions(str(prompts_jsonl), n):
        ids = chat_prompt_ids(tok, [{"role": "user", "content": q["turns"][0]}], str(model_dir))
        out.append(greedy_decode(lm, ids, max_new, eos).tokens)
    return out


def test_ablations_real_tiny_run_and_resume(tiny_model_dir, prompts, tmp_path, capsys):
    out = tmp_path / "abl"
    argv = ["--model-id", str(tiny_model_dir), "--prompts-jsonl", str(prompts), "--max-prompts", "2",
            "--max-new-tokens", "6", "--out", str(out), "--presets", "full,kd_only", "--num-threads", "1",
            "--window", "4", "--device", "cpu", "--dvi-batch-size", "4", "--dvi-buffer-size", "16",
            "--dvi-update-every", "1", "--dvi-topk", "16", "--dvi-warmup-steps", "2", "--metrics-every", "1000"]
    assert ra.main(argv) == 0
    for p in ("full", "kd_only"):
        assert (out / p / "checkpoints" / "final.pt").is_file() and (out / p / "done.json").is_file()
        ans = [json.loads(line) for line in open(out / p / "answers.jsonl")]
        assert len(ans) == 2
    greedy = greedy_answers(tiny_model_dir, prompts, 2, 6)
    for p in ("full", "kd_only"):  # lossless: each preset's output is the model's own greedy output
        assert [json.loads(line)["token_ids"][0] for line in open(out / p / "answers.jsonl")] == greedy
    md = (out / "table.md").read_text()
    assert "| full | done |" in md and "| kd_only | done |" in md
    capsys.readouterr()
    assert ra.main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
