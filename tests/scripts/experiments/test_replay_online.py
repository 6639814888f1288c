import pytest
import torch

from scripts.experiments.replay.online import calibration, parse_run

BASE = {"lr": 3e-3, "ablation": "full", "kd_top1": 0.0, "warmup": 500, "r": 64, "steps_per_answer": 3}


def test_calibration_hand_computed():
    conf = torch.tensor([0.95, 0.95, 0.15, 0.15, 0.65])
    agree = torch.tensor([True, False, False, False, True])
    c = calibration(conf, agree, threshold=0.6, bins=10)
    # bins: 0.95 -> |1.9 - 1| ; 0.15 -> |0.3 - 0| ; 0.65 -> |0.65 - 1|
    assert c["ece"] == pytest.approx((0.9 + 0.3 + 0.35) / 5)
    assert c["top1_agree"] == pytest.approx(0.4) and c["mean_conf"] == pytest.approx(0.57)
    assert c["drafted_share"] == pytest.approx(0.6) and c["precision_at_threshold"] == pytest.approx(2 / 3)
    assert calibration(torch.tensor([0.1]), torch.tensor([False]), 0.6)["precision_at_threshold"] is None


def test_parse_run_casts_like_the_base_and_refuses_unknown_keys(capsys):
    name, cfg = parse_run("x ablation=kd_only kd_top1=1 lr=1e-2 steps_per_answer=6", BASE)
    assert name == "x" and cfg["ablation"] == "kd_only" and cfg["kd_top1"] == 1.0 and cfg["lr"] == 0.01
    assert cfg["steps_per_answer"] == 6 and isinstance(cfg["steps_per_answer"], int) and cfg["warmup"] == 500
    with pytest.raises(SystemExit):
        parse_run("x learning_rate=1", BASE)
    assert "learning_rate=1" in capsys.readouterr().err
