"""What the server keeps in its state folder: a checkpoint resumes the drafter, optimizer, schedule, step count and the
goodput policy's calibration (shared by every request's drafter); step files are pruned to the newest few; the run
record gets one entry per start."""
import json

import torch

from dvi.checkpoint import checkpoint_path, read_ckpt
from dvi.config import BufferConfig, DVIConfig, IOConfig, LoRAConfig, TrainerConfig
from dvi.deploy import read_deployment
from dvi.online_loop import DVILearner
from kangaroo.drafter_config import DrafterConfig
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.kangaroo_model import KangarooModel
from kangaroo_dvi.serve.drafting import DrafterFactory
from kangaroo_dvi.serve.learning import RunRecord, ServeLearner, prune_steps
from tests.helpers import make_tiny_llama
from tests.serve.test_scheduler import prompts, request, result, scheduler

GOODPUT = DrafterConfig(model_id="tiny", drafter="hybrid", draft_policy="goodput", steps=4)
QUIET = {"print_fn": lambda *_: None}


def learner_cfg(tmp_path, load=""):
    return DVIConfig(online=True, lora=LoRAConfig(r=4, alpha=8.0), buffer=BufferConfig(capacity=64, topk=16),
                     trainer=TrainerConfig(lr=0.05, batch_size=4, update_every=1, kind="inline", max_ms=None),
                     io=IOConfig(load=load, save_dir=str(tmp_path / "ck"), metrics_out=str(tmp_path / "m"), max_k=4))


def serve_learner(km, cfg, loaded=None):
    """The server's learner as a session builds it: a LoRA head, the ``DVILearner``, the checkpoint it loaded."""
    attach_drafter_head(km, r=cfg.lora.r, alpha=cfg.lora.alpha)
    return ServeLearner(DVILearner(km, cfg, **QUIET), loaded)


def serve_some(lm, tmp_path, load=""):
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    learner = serve_learner(km, learner_cfg(tmp_path, load))
    sched, factory = scheduler(km, learner=learner, cfg=GOODPUT)
    learner.bind(factory)
    reqs = [request(ids, 24) for ids in prompts([5, 9, 4])]
    for seq, _ in reqs:
        sched.submit(seq)
    sched.start()
    for _, ev in reqs:
        result(ev)
    sched.close(timeout=60)
    return km, learner, factory


def test_restart_resumes_drafter_optimizer_schedule_and_calibration(tmp_path):
    lm = make_tiny_llama()
    km, learner, factory = serve_some(lm, tmp_path)
    assert sum(factory.calibrator.tried.values()) > 0  # the shared calibrator learned from the requests
    final = learner.finish()["final"]
    ck = read_ckpt(final)
    assert ck["extra"]["calibration"] == factory.calibrator.state_dict()
    assert ck["extra"]["trainer_steps_total"] == learner.trainer_steps > 0

    km2 = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    again = serve_learner(km2, learner_cfg(tmp_path / "2", load=final), read_deployment(final))
    factory2 = DrafterFactory(GOODPUT, km2, online=True, **QUIET)
    again.bind(factory2)
    assert again.calibration_restored and factory2.calibrator.tried == factory.calibrator.tried
    assert factory2.calibrator.accepted == factory.calibrator.accepted
    assert again.dvi.global_step == learner.dvi.global_step and again.trainer_steps == learner.trainer_steps
    assert torch.equal(km2.drafter_head.proj.B, km.drafter_head.proj.B)
    t1, t2 = learner.dvi.trainer, again.dvi.trainer
    assert t2.schedule.step == t1.schedule.step and t2.ema_baseline == t1.ema_baseline
    s1, s2 = t1.optimizer.state_dict()["state"], t2.optimizer.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1) and s1
    again.finish()


def test_prune_keeps_the_newest_step_files_and_never_final(tmp_path):
    for step in (5, 10, 15, 20):
        checkpoint_path(tmp_path, step).write_bytes(b"x")
    checkpoint_path(tmp_path).write_bytes(b"final")
    (tmp_path / "step_notes.pt").write_bytes(b"not ours")
    prune_steps(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt", "step_00000015.pt", "step_00000020.pt",
                                                          "step_notes.pt"]


def test_run_record_appends_one_entry_per_start(tmp_path):
    path = tmp_path / "run.json"
    RunRecord(path, ["--port", "1"], None).stop(global_step=7)
    RunRecord(path, ["--port", "2"], "ck/final.pt")
    runs = json.loads(path.read_text())["runs"]
    assert [r["argv"] for r in runs] == [["--port", "1"], ["--port", "2"]]
    assert runs[0]["global_step"] == 7 and runs[0]["stopped"] and runs[1]["stopped"] is None
    assert runs[1]["resumed_from"] == "ck/final.pt"
    path.write_text("{ damaged")
    RunRecord(path, [], None)
    assert len(json.loads(path.read_text())["runs"]) == 1
