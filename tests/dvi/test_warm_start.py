"""The feature drafter's warm start (``dvi/warm_start.py``, ``python -m scripts.warm_start``): its rows are those the
online loop pushes, training raises the drafter's agreement on what it trained on and touches nothing but the feature
drafter, the command caches its file, an online run starts from it (and ignores it when it resumes), losslessly, and a
warm start shaped otherwise than the run is refused in one line naming the flag."""
import json
from dataclasses import replace

import torch

from dvi.offline_data import capture, heldout_top1, scored_positions, tuples
from dvi.deploy import read_deployment
from dvi.warm_start import WarmStartConfig, greedy_answers, save, train
from evaluation import inference_kangaroo
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.feature_drafter import attach_feature_drafter, feature_tensors
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo_dvi.session import warm_start
from scripts import warm_start as warm_start_cli
from tests.dvi.test_online_loop import dvi_args
from tests.evaluation.test_bad_inputs import one_line, run
from tests.helpers import make_tiny_llama


def test_rows_are_the_online_loops_and_training_raises_agreement_on_them():
    lm = make_tiny_llama()
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    attach_drafter_head(km, r=4, alpha=8.0)
    fd = attach_feature_drafter(km, window=4, r=4, alpha=8.0)
    prompts = [torch.randint(3, 90, (12,), generator=torch.Generator().manual_seed(seed)).tolist() for seed in range(3)]
    answers = [greedy_decode(lm, torch.tensor([p]), 10, set()).tokens for p in prompts]
    short = prompts[1][5:]  # a batch of prompts of unequal lengths (left-padded) answers each as one prompt alone
    assert greedy_answers(lm, [prompts[0], short, prompts[2]], 10, set(), batch=3) == [
        answers[0], greedy_decode(lm, torch.tensor([short]), 10, set()).tokens, answers[2]]
    seqs = []
    for prompt, answer in zip(prompts, answers):
        positions = scored_positions(len(prompt), len(answer), 4)
        assert positions[-len(answer):] == list(range(11, 21)) and len(positions) == 14  # 4 prompt rows + answer
        seqs.append(capture(km, prompt + answer, len(prompt), positions, 8))
    s = seqs[0]
    assert s["f"].shape == (22, km.config.hidden_size) and s["top_idx"].shape == (14, 8)
    assert s["top_idx"][-1, 0] == s["ids"][-1]  # the answer's rows hold the verifier's greedy token first
    head_b = km.drafter_head.proj.B.detach().clone()
    before = {k: v.detach().clone() for k, v in feature_tensors(fd).items()}
    start = heldout_top1(fd, None, seqs)
    curve = train(km, seqs, WarmStartConfig(epochs=60, lr=3e-3, batch_size=8), bf16=False, log=lambda *_: None)
    assert curve[-1]["step"] == int(60 * len(tuples(seqs)) / 8)
    assert heldout_top1(fd, None, seqs) > start + 0.3
    assert any(not torch.equal(before[k], v) for k, v in feature_tensors(fd).items())
    assert torch.equal(km.drafter_head.proj.B, head_b)  # the self-drafter's head is not the warm start's


def test_a_warm_started_run_trains_its_feature_drafter_at_the_warm_rate(tmp_path):
    km = KangarooModel(model_id="tiny", base_model=make_tiny_llama(), exit_layer=2)
    attach_drafter_head(km, r=4, alpha=8.0)
    attach_feature_drafter(km, window=4, r=4, alpha=8.0)
    path = tmp_path / "ws.pt"
    save(path, km, WarmStartConfig(), [{"step": 0}])
    cfg = dvi_args(tmp_path, "--dvi-online", "true", "--dvi-warm-start", str(path))
    assert cfg.trainer.feature_lr == 3e-4 and cfg.trainer.feature_lr_warm == 1e-4
    started = warm_start(km, cfg, None, print_fn=lambda *_: None)
    assert started.trainer.feature_lr == 1e-4 and started.io.warm_start == str(path)
    meta = read_deployment(path)
    resumed = warm_start(km, cfg, meta, print_fn=lambda *_: None)  # a checkpoint of a run that did not start warm
    assert resumed.trainer.feature_lr == 3e-4 and resumed.io.warm_start == ""
    warm_meta = replace(meta, extra={"warm_started": True})
    assert warm_start(km, replace(cfg, io=replace(cfg.io, warm_start="")), warm_meta,
                      print_fn=lambda *_: None).trainer.feature_lr == 1e-4


def test_command_caches_and_an_online_run_starts_from_it_losslessly(tiny_model_dir, tmp_path, capsys):
    convs = [json.dumps({"conversations": [{"from": "human", "value": f"Question {i}: how are you today"},
                                           {"from": "gpt", "value": f"Answer {i}: I am fine, thank you very much"}]})
             for i in range(4)]
    (tmp_path / "s.jsonl").write_text("\n".join(convs) + "\n")
    ws = tmp_path / "ws.pt"
    shape = ["--drafter-vocab", "0", "--feature-window", "4", "--dvi-lora-r", "4"]
    build = ["--model-id", str(tiny_model_dir), "--prompts-jsonl", str(tmp_path / "s.jsonl"), "--begin", "0",
             "--end", "3", "--epochs", "2", "--batch-size", "8", "--topk", "8", "--out", str(ws), *shape]
    rc, out, err = run(warm_start_cli, build, capsys)
    assert rc == 0 and ws.is_file(), err
    mtime = ws.stat().st_mtime_ns
    rc, out, err = run(warm_start_cli, build, capsys)
    assert rc == 0 and "holds a warm start with these settings" in out and ws.stat().st_mtime_ns == mtime
    rc, _, err = run(warm_start_cli, build[:-len(shape) - 2] + ["--end", "2", "--begin", "2"], capsys)
    assert rc == 2
    one_line(err, "--end 2 must be above --begin 2")

    online = ["--model-id", str(tiny_model_dir), "--device", "cpu", "--no-progress", "--max-new-tokens", "8",
              "--prompts-jsonl", str(tmp_path / "s.jsonl"), "--metrics-out", str(tmp_path / "m"), "--dvi-topk", "8",
              "--dvi-batch-size", "2", "--dvi-online", "true", "--drafter", "ngram,feature,self", "--compare-greedy",
              "--save-lora-path", str(tmp_path / "ck"), "--dvi-warm-start", str(ws), *shape]
    rc, out, err = run(inference_kangaroo, online + ["--answer-file", str(tmp_path / "a.jsonl")], capsys)
    assert rc == 0 and "drafters start from the warm start" in out + err and "4/4" in out + err, err
    assert read_deployment(tmp_path / "ck" / "final.pt").extra["warm_started"] is True
    rc, out, err = run(inference_kangaroo, online + ["--answer-file", str(tmp_path / "b.jsonl")], capsys)
    assert rc == 0 and "--dvi-warm-start" in out + err and "ignored: resuming" in out + err
    assert read_deployment(tmp_path / "ck" / "final.pt").extra["warm_started"] is True  # kept through a resume

    other = [{str(tmp_path / "ck"): str(tmp_path / "ck2")}.get(a, a) for a in online]
    other[other.index("--feature-window") + 1] = "3"
    rc, _, err = run(inference_kangaroo, other + ["--answer-file", str(tmp_path / "c.jsonl")], capsys)
    assert rc == 2
    one_line(err, "--feature-window 4")
    rc, _, err = run(inference_kangaroo, online[:-len(shape) - 1] + [str(tmp_path / "none.pt")], capsys)
    assert rc == 2
    one_line(err, "python -m scripts.warm_start")
