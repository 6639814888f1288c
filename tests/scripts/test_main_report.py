"""scripts/main_report.py: the main job's README from its metrics and its greedy reference."""
import json

import pytest

from scripts.main_report import main, report
from tests.scripts.metrics_fakes import fake_metrics


def test_readme_states_the_online_targets(tmp_path):
    # 8 blocks: the last quarter (2 blocks) agrees once of twice; the first quarter never
    fake_metrics(tmp_path, [(1, 0, False, 30.0)] * 6 + [(1, 1, True, 30.0), (1, 0, False, 30.0)])
    (tmp_path / "metrics" / "vs_greedy.json").write_text(json.dumps(
        {"turns": 3, "equal_to_greedy": 3, "decode_tokens_per_s": 24.0, "greedy_tokens_per_s": 20.0, "speedup": 1.2}))
    (tmp_path / "metrics" / "heldout.csv").write_text(
        "step,trainer_steps,drafter,top1,accept_len,n,ms\n0,0,self,0.05,0.06,512,300\n0,0,feature,0.1,0.2,512,9\n"
        "800,100,self,0.25,0.4,512,310\n800,100,feature,0.3,0.5,512,9\n")
    assert main(["--out", str(tmp_path), "--command", "bash scripts/main.sh", "--note", "shared machine"]) == 0
    md = (tmp_path / "README.md").read_text()
    assert "| top1_agree (over probed blocks), last quarter of blocks | 0.500 | >= 0.3 (met) |" in md
    assert "| top1_agree (over probed blocks), first quarter | 0.000 |" in md
    assert ("| held-out top-1 agreement (self), start -> end | 0.050 -> 0.250 | trainer steps 0 -> 100, 512 "
            "positions |") in md
    assert "| held-out accepted length (feature), start -> end | 0.20 -> 0.50 |" in md
    assert "| decode / greedy | 1.200x | >= 1.15x (met) |" in md and "| outputs equal to greedy | 3/3 | all |" in md
    assert "bash scripts/main.sh" in md and "shared machine" in md


def test_missing_metrics_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="run the main job first"):
        report(tmp_path, "cmd")
