"""scripts.experiments: the runner's resume/refuse logic and driver commands (on a fake driver), the report maths on
hand-made CSVs, and, on the tiny model folder, the seed's effect on the trained LoRA and the held-out experiment."""
import json
from pathlib import Path

import pytest
import torch

from evaluation import inference_kangaroo
from scripts.experiments import ablations as ra
from scripts.experiments import __main__ as exp_main, heldout, heldout_report as hrep, sweep_report as srep, sweeps
from scripts.experiments.prompt_stream import stream_plan
from scripts.experiments.question_mix import round_robin, write_questions
from scripts.experiments.runner import RunPlan, Variant, driver_argv, run_variants
from scripts.experiments.series import RunMetrics, quarters, segment_stats
from scripts.experiments.spread import band, spread
from tests.scripts.metrics_fakes import fake_metrics

REPO = Path(__file__).resolve().parents[3]


def one_error_line(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as e:
        fn(*args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------------------------- a fake driver
class FakeDriver:
    """Stands in for evaluation.inference_kangaroo.main: records each command, writes what a finished run leaves."""

    def __init__(self, rc=0):
        self.calls, self.rc = [], rc

    def __call__(self, argv):
        self.calls.append(list(argv))
        get = lambda flag: argv[len(argv) - 1 - argv[::-1].index(flag) + 1]  # noqa: E731 (last one wins)
        fake_metrics(Path(get("--metrics-out")).parent, [(1, 1, True, 10.0), (2, 0, False, 10.0)])
        if "--save-lora-path" in argv:
            ck = Path(get("--save-lora-path")) / "final.pt"
            ck.parent.mkdir(parents=True, exist_ok=True)
            ck.write_bytes(b"lora")
        return self.rc


@pytest.fixture
def driver(monkeypatch):
    fake = FakeDriver()
    monkeypatch.setattr(inference_kangaroo, "main", fake)
    return fake


def test_driver_argv_order_and_layout(tmp_path):
    plan = RunPlan(tmp_path, ("--model-id", "m"), ("--seed", "5"), num_threads=1)
    online = Variant("a", ("--dvi-online", "true", "--steps", "4"))
    assert driver_argv(plan, online) == [
        "--model-id", "m", "--dvi-online", "true", "--steps", "4", "--metrics-out", str(tmp_path / "a" / "metrics"),
        "--save-lora-path", str(tmp_path / "a" / "checkpoints"), "--answer-file", str(tmp_path / "a" / "answers.jsonl"),
        "--overwrite", "--no-progress", "--num-threads", "1", "--seed", "5"]
    deploy = Variant("b", ("--dvi-online", "false"), online=False, overrides=("--drafter", "self"))
    argv = driver_argv(plan, deploy)
    assert "--save-lora-path" not in argv and argv[-4:] == ["--seed", "5", "--drafter", "self"]


def test_ablations_keep_the_driver_command_of_the_committed_runs():
    """run_ablations on the runner builds, flag for flag, the command its committed runs recorded."""
    done = json.loads((REPO / "runs" / "ablations" / "full" / "done.json").read_text())
    args = ra.parse_args(["--model-id", "smollm2-135m", "--prompts-jsonl", "assets/sharegpt.jsonl", "--max-prompts",
                          "150", "--max-new-tokens", "32", "--out", "runs/ablations", "--num-threads", "1",
                          *done["argv"][done["argv"].index("--seed"):]])
    assert driver_argv(stream_plan(args, "ablations"), ra.preset_variant("full")) == done["argv"]


def test_sweep_variants_and_value_checks(capsys):
    s = sweeps.SWEEPS
    assert [(v.name, v.flags) for v in s["exit_layer"].variants(["1", "4"])] == [
        ("exitlayer1", ("--dvi-online", "true", "--exitlayer", "1")),
        ("exitlayer4", ("--dvi-online", "true", "--exitlayer", "4"))]
    assert [v.name for v in s["schedule"].variants(list(s["schedule"].values))] == ["full", "kd_only", "kd+ce"]
    assert s["seeds"].check("0, 2,2") == ["0", "2"] and s["steps"].values == ("2", "4", "6")
    assert "integers >= 1" in one_error_line(capsys, s["steps"].check, "2,0")
    assert "unknown nope" in one_error_line(capsys, s["schedule"].check, "full,nope")
    for argv in (["seeds", "--seed", "3"], ["steps", "--metrics-out", "x"], ["nope"], [],
                 ["heldout", "--eval-questions", "0"], ["heldout", "--categories", "qa"]):
        one_error_line(capsys, exp_main.main, argv)


def test_runner_resumes_refuses_and_reruns(tmp_path, driver, capsys):
    inp = tmp_path / "input.bin"
    inp.write_bytes(b"v1")
    plan = RunPlan(tmp_path / "out", ("--model-id", "m"), ("--seed", "1"))
    vs = [Variant("on", ("--dvi-online", "true")),
          Variant("off", ("--dvi-online", "false"), online=False, inputs=(str(inp),))]
    run_variants(plan, vs)
    assert len(driver.calls) == 2 and json.loads((tmp_path / "out" / "off" / "done.json").read_text())["inputs"]
    run_variants(plan, vs)                                              # same settings: both skipped
    assert len(driver.calls) == 2 and capsys.readouterr().out.count("finished earlier, skipped") == 2
    # other extra flags: refused, nothing run
    assert "other settings" in one_error_line(capsys, run_variants, RunPlan(plan.out, plan.data_flags, ("--seed", "2")),
                                              vs)
    inp.write_bytes(b"v2")                                              # a changed input: refused too
    assert "other inputs" in one_error_line(capsys, run_variants, plan, vs[1:])
    run_variants(RunPlan(plan.out, plan.data_flags, plan.extra, overwrite=True), vs[1:])   # --overwrite reruns
    assert len(driver.calls) == 3
    (plan.out / "on" / "checkpoints" / "final.pt").unlink()            # interrupted online run: no final.pt
    run_variants(plan, vs)
    assert len(driver.calls) == 4 and driver.calls[-1][:4] == ["--model-id", "m", "--dvi-online", "true"]
    inp.unlink()
    assert "does not exist" in one_error_line(capsys, run_variants, plan, vs[1:])


def test_a_failed_run_leaves_no_done_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inference_kangaroo, "main", FakeDriver(rc=2))
    plan = RunPlan(tmp_path, ("--model-id", "m"))
    assert "exit code 2" in one_error_line(capsys, run_variants, plan, [Variant("a", ())])
    assert not (tmp_path / "a" / "done.json").exists() and (tmp_path / "a" / "metrics" / "acceptance.csv").exists()


# ----------------------------------------------------------------------------------------------- report maths
def test_segment_and_quarter_stats_skip_blank_cells():
    # 8 blocks: quarters of 2; block 2 drafted nothing (acc@1 blank), blocks 1 and 8 have no top1_agree
    blocks = [(1, 1, None, 10), (0, 0, False, 10), (2, 2, True, 10), (2, 0, False, 10), (1, 0, True, 10),
              (1, 1, True, 10), (2, 1, False, 10), (3, 3, None, 20)]
    acc = [{"step": i, "acc@1": None if d < 1 else int(a >= 1), "block_acc": a / d if d else None,
            "committed": a + 1, "top1_agree": None if t is None else int(t)}
           for i, (d, a, t, _) in enumerate(blocks, 1)]
    speed = [{"wall_ms": ms, "committed": a + 1} for d, a, t, ms in blocks]
    q = quarters(RunMetrics(acc, speed))
    assert q["blocks"] == 8 and q["first"]["blocks"] == q["last"]["blocks"] == 2
    assert q["first"]["acc@1"] == 1.0 and q["first"]["top1_agree"] == 0.0       # block 1: no top1; block 2: no acc@1
    assert q["last"]["top1_agree"] == 0.0 and q["last"]["acc@1"] == 1.0
    assert q["last"]["mean_accepted"] == 3.0 and q["last"]["tokens_per_s"] == pytest.approx(6 / 0.03)
    assert q["all"]["top1_agree"] == pytest.approx(3 / 6) and q["all"]["acc@1"] == pytest.approx(5 / 7)
    assert quarters(RunMetrics(acc[:3], speed[:3]))["last"]["blocks"] == 1     # under 8 blocks: one block each
    assert segment_stats([], [])["top1_agree"] is None


def test_spread_and_band():
    s = spread([0.1, None, 0.3, 0.2])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(0.1)
    assert (s["min"], s["max"]) == (0.1, 0.3)
    assert spread([0.5])["std"] is None and spread([None])["mean"] is None
    steps, mid, lo, hi = band([([1, 2, 3], [0.0, 0.2, None]), ([1, 2], [0.4, None])])
    assert steps == [1, 2] and mid == pytest.approx([0.2, 0.2]) and lo == [0.0, 0.2] and hi == [0.4, 0.2]


def test_seeds_report_only_on_hand_made_csvs(tmp_path, capsys):
    out = tmp_path / "seeds"
    fake_metrics(out / "seed1", [(1, 0, False, 10)] * 4 + [(1, 1, True, 10)] * 4)  # last quarter: all agree
    fake_metrics(out / "seed2", [(1, 0, False, 10)] * 8)                             # never
    (out / "seed2" / "done.json").write_text("{}")
    assert exp_main.main(["seeds", "--report-only", "--out", str(out), "--values", "1,2,3", "--window", "2"]) == 0
    md = (out / "table.md").read_text()
    assert "| seed1 | 1 | partial | 8 | 0.000 | 1.000 | 0.000 | 1.000 | 1.000 | 2.000 |" in md
    assert "| seed2 | 2 | done | 8 | 0.000 | 0.000 |" in md and "not run (no acceptance.csv): seed3" in md
    # last quarter top1_agree over the two seeds: 1 and 0 -> mean 0.5, sample std 0.707
    assert "| **mean ± std** (n=2) | | | | 0.000 ± 0.000 | 0.500 ± 0.707 |" in md
    assert "| **min – max** (n=2) | | | | 0.000 – 0.000 | 0.000 – 1.000 |" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spread"]["last"]["mean_accepted"]["mean"] == 1.5 and (out / "curves.png").stat().st_size > 0
    assert "no run folder" in one_error_line(capsys, exp_main.main, ["steps", "--report-only", "--out", str(out)])


def test_sweep_report_without_spread_has_no_spread_rows(tmp_path):
    out = tmp_path / "steps"
    fake_metrics(out / "steps2", [(2, 1, True, 10)] * 4)
    srep.build_sweep_report(out, "t", "--steps", {"steps2": "2"}, 2, {"command": "c"}, with_spread=False)
    md = (out / "table.md").read_text()
    assert "| steps2 | 2 | partial | 4 | 1.000 | 1.000 |" in md and "mean ± std" not in md
    assert "spread" not in json.loads((out / "summary.json").read_text())


def test_heldout_report_cells_and_gains(tmp_path):
    out = tmp_path / "ho"
    fake_metrics(out / "untrained_heldin", [(1, 0, False, 10), (1, 1, True, 10)])
    fake_metrics(out / "trained_heldin", [(1, 1, True, 10), (1, 1, True, 10)])
    fake_metrics(out / "untrained_heldout", [(1, 0, False, 10), (1, 0, None, 10)])
    fake_metrics(out / "train", [(1, 0, False, 10)] * 4)
    (out / "untrained_heldout" / "answers.jsonl").write_text(json.dumps({"question_id": 1, "category": "tr"}) + "\n")
    cells = hrep.build_heldout_report(out, 2, {"command": "c", "held-out category": "tr"})
    assert set(cells) == {"untrained_heldin", "trained_heldin", "untrained_heldout"}
    assert cells["untrained_heldout"]["top1_agree"] == 0.0 and cells["untrained_heldout"]["categories"] == {"tr": 1}
    g = hrep.gains(cells)
    assert g["held-in"]["top1_agree"] == 0.5 and g["held-in"]["mean_accepted"] == 0.5 and g["held-out"]["acc@1"] is None
    md = (out / "table.md").read_text()
    assert "| untrained | held-out | partial | 1 | tr 1 | 2 | 0.000 | 0.000 | 1.000 |" in md
    assert "| held-in | +0.500 | +0.500 | +0.500 | +0.500 |" in md and "| held-out | - |" in md
    assert "Training run (`train`, partial): 4 blocks" in md
    assert (out / hrep.PNG).stat().st_size > 0 and (out / hrep.CURVES_PNG).stat().st_size > 0


def test_round_robin_mixes_categories_and_keeps_the_file_stable(tmp_path):
    qs = [{"question_id": i, "category": c} for i, c in enumerate("aaabbc")]
    assert [q["question_id"] for q in round_robin(qs)] == [0, 3, 5, 1, 4, 2]
    p = write_questions(tmp_path / "q.jsonl", qs)
    mtime = p.stat().st_mtime_ns
    write_questions(p, qs)
    assert p.stat().st_mtime_ns == mtime   # same content: untouched (its digest, and the runs reading it, stay)


# ----------------------------------------------------------------------------------------------- tiny model runs
TINY_DVI = ["--device", "cpu", "--num-threads", "1", "--dvi-batch-size", "4", "--dvi-buffer-size", "16",
            "--dvi-update-every", "1", "--dvi-topk", "16", "--dvi-warmup-steps", "2", "--metrics-every", "1000"]


def lora(run_folder) -> dict:
    from dvi.checkpoint import read_ckpt

    return read_ckpt(Path(run_folder) / "checkpoints" / "final.pt")["lora"]


def test_seed_changes_the_trained_lora_and_only_the_seed(tiny_model_dir, prompts, tmp_path):
    """--seed reaches the LoRA init (global torch seed) and the buffer's sampling: two seeds train different
    tensors, the same seed the same ones (inline trainer with no time cap, and the threshold policy, which reads no
    clock: a deterministic run; goodput's drafting follows the cost curve the run measures)."""
    common = ["--model-id", str(tiny_model_dir), "--prompts-jsonl", str(prompts), "--max-prompts", "3",
              "--max-new-tokens", "6", *TINY_DVI, "--dvi-trainer", "inline", "--max-online-train-ms", "1000000",
              "--exitlayer", "2", "--draft-policy", "threshold"]
    assert exp_main.main(["seeds", "--out", str(tmp_path / "a"), "--values", "1,2", *common]) == 0
    assert exp_main.main(["seeds", "--out", str(tmp_path / "b"), "--values", "1", *common]) == 0
    one, two, again = lora(tmp_path / "a" / "seed1"), lora(tmp_path / "a" / "seed2"), lora(tmp_path / "b" / "seed1")
    assert one["B"].abs().sum() > 0, "no trainer step ran: the test would prove nothing"
    for name in ("A", "B"):
        assert not torch.equal(one[name], two[name]), f"seeds 1 and 2 trained identical LoRA {name}"
        assert torch.equal(one[name], again[name]), f"seed 1 twice trained different LoRA {name}"
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["runs"]) == {"seed1", "seed2"} and summary["spread"]["last"]["acc@1"]["n"] >= 1
    assert (tmp_path / "a" / "command.txt").read_text().startswith("python -m scripts.experiments seeds --out")


def test_heldout_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    rows = [{"question_id": i, "category": c, "turns": [f"Say {i} in {c}."]}
            for i, c in enumerate(["writing", "writing", "writing", "qa", "qa", "tr", "tr"])]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ho"
    argv = ["heldout", "--model-id", str(tiny_model_dir), "--question-file", str(q), "--heldout", "tr",
            "--max-prompts", "3", "--eval-questions", "2", "--max-new-tokens", "4", "--out", str(out), *TINY_DVI]
    assert exp_main.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    cells = summary["cells"]
    # mix: writing0 qa3 tr5 writing1 qa4 tr6 writing2 -> train = writing0 qa3 writing1; held-in = qa4 writing2
    assert [r["question_id"] for r in map(json.loads, open(out / "train" / "answers.jsonl"))] == [0, 3, 1]
    assert cells["trained_heldin"]["categories"] == {"qa": 1, "writing": 1}
    assert cells["trained_heldout"]["categories"] == cells["untrained_heldout"]["categories"] == {"tr": 2}
    assert summary["meta"]["training categories"] == "writing 2, qa 1" and summary["train"]["blocks"] > 0
    capsys.readouterr()
    assert exp_main.main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 5
    (out / "train" / "checkpoints" / "final.pt").write_bytes(b"changed")    # the cells that deployed it are stale
    assert "other inputs" in one_error_line(capsys, exp_main.main, argv)
    assert exp_main.main(["heldout", "--report-only", "--out", str(out)]) == 0
    meta = json.loads((out / "summary.json").read_text())["meta"]
    assert meta["held-out category"] == "tr" and meta["command"].startswith("python -m scripts.experiments heldout")
    assert "report" in meta
    assert "need 6" in one_error_line(capsys, heldout.main, [*argv[1:], "--overwrite", "--max-prompts", "4"])
