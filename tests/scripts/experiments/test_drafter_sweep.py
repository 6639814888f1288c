"""python -m scripts.experiments drafter_sweep: the variants of the coordinate sweep, and both phases end to end on the
tiny model folder (online runs with their greedy reference, deployed variants interleaved with greedy, the report and
resume)."""
import json

from scripts.experiments.drafter_sweep import sweep as sd
from tests.scripts.experiments.test_experiments import TINY_DVI, one_error_line


def test_coordinate_sweep_varies_one_setting_at_a_time():
    args = sd.parse_args(["--exit-layers", "1,2,4", "--adapters", "on,off", "--vocabs", "4096,8192,0",
                          "--steps-list", "3,6", "--drafters", "self,hybrid"])
    trained, deployed = sd.variants(args)
    assert [t.name for t in trained] == ["k2_adapter_v8192", "k1_adapter_v8192", "k4_adapter_v8192",
                                         "k2_lora_v8192", "k2_adapter_v4096", "k2_adapter_vfull"]
    assert len(deployed) == 2 * (len(trained) + 1)  # every trained configuration at steps 6, the base at 3 too
    assert {d.name for d in deployed} >= {"k2_adapter_v8192_s3_self", "k2_adapter_v8192_s6_hybrid"}
    grid = sd.variants(sd.parse_args(["--grid", "--exit-layers", "1,2", "--adapters", "on", "--vocabs", "0",
                                      "--steps-list", "6"]))[1]
    assert [d.name for d in grid] == ["k1_adapter_vfull_s6_self", "k2_adapter_vfull_s6_self"]


def test_bad_lists_are_one_line(capsys):
    assert "--exit-layers" in one_error_line(capsys, sd.parse_args, ["--exit-layers", "0,x"])
    assert "--drafters" in one_error_line(capsys, sd.parse_args, ["--drafters", "magic"])
    assert "--base" in one_error_line(capsys, sd.parse_args, ["--base", "2,on"])


def test_both_phases_end_to_end_and_resume(tiny_model_dir, prompts, tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"question_id": i, "category": c, "turns": [f"Say {i}."]}) + "\n"
                         for i, c in enumerate(["writing", "qa", "writing"])))
    out = tmp_path / "sweep"
    argv = ["--model-id", str(tiny_model_dir), "--out", str(out), "--prompts-jsonl", str(prompts),
            "--question-file", str(q), "--base", "2,off,0,3", "--exit-layers", "1", "--adapters", "on",
            "--vocabs", "0", "--steps-list", "2", "--drafters", "self", "--train-prompts", "2", "--train-tokens", "6",
            "--per-category", "1", "--max-new-tokens", "6", "--no-progress", *TINY_DVI[2:]]
    assert sd.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["online"]] == ["k2_lora_vfull", "k1_lora_vfull", "k2_adapter_vfull"]
    assert all(r["turns"] == 2 and r["equal"] == 2 and r["vs_greedy"] > 0 for r in summary["online"])
    dep = {r["name"]: r for r in summary["deployed"]}
    assert set(dep) == {"k2_lora_vfull_s3_self", "k1_lora_vfull_s3_self", "k2_adapter_vfull_s3_self",
                        "k2_lora_vfull_s2_self"}
    assert all(r["mismatches"] == 0 and r["speedup"] > 0 for r in dep.values())
    assert all(r["probes"] + r["declined_free"] > 0 for r in dep.values())  # the gate saw every self block
    assert summary["best"]["online"] in {r["name"] for r in summary["online"]}
    raw = [json.loads(line) for line in open(out / "deployed" / "raw.jsonl")]
    assert [r["question_id"] for r in raw] == [0, 1] and all(set(r["methods"]) == {"baseline", *dep} for r in raw)
    assert "## Deployed" in (out / "table.md").read_text() and (out / "deployed" / "speedup.png").is_file()
    capsys.readouterr()
    assert sd.main(argv) == 0  # resumed: nothing decoded again
    assert capsys.readouterr().out.count("finished earlier, skipped") == 3
    assert "other settings" in one_error_line(capsys, sd.main, [*argv, "--per-category", "2", "--phases", "deployed"])
