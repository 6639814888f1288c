"""Training off the critical path: the trainer thread (lossless decoding, published weights adopted at block
boundaries, checkpoints), the buffer under concurrent push/sample, and the enforced inline time budget."""
import csv
import threading

import torch

from dvi.types import DVITrainSample
from tests.dvi.helpers import ring
from dvi.online_loop import DVILearner
from dvi.train_budget import TrainBudget
from kangaroo.greedy import greedy_decode
from kangaroo.speculative import kangaroo_generate
from tests.dvi.test_online_loop import dvi_args, make
from tests.helpers import prompts


def test_thread_trainer_is_lossless_learns_and_publishes(tmp_path):
    lm, km, _, _ = make(tmp_path)
    learner = DVILearner(km, dvi_args(tmp_path, "--dvi-online", "true", "--dvi-trainer", "thread"),
                         print_fn=lambda *_: None)
    assert learner.bg is not None and learner.trainer.model is learner.shadow
    for ids in prompts(3):
        res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0, on_block=learner.on_block)
        assert res.tokens == greedy_decode(lm, ids, 30, set()).tokens
    learner.bg.close(drain=True)
    summary = learner.finish()
    assert summary["trainer"] == "thread" and summary["train_steps"] >= 1
    # the live head holds the trainer's last published weights, and they are what was saved
    assert torch.equal(km.drafter_head.proj.B, learner.shadow.drafter_head.proj.B)
    assert km.drafter_head.proj.B.abs().sum() > 0
    assert km.drafter_head.proj.base is learner.shadow.drafter_head.proj.base  # frozen W shared, not copied
    rows = list(csv.DictReader(open(tmp_path / "metrics" / "speed.csv")))
    assert {"decode_ms", "bg_trainer_ms", "lora_version"} <= set(rows[0])
    assert all(float(r["trainer_ms"]) == 0 for r in rows)  # nothing trained inside the decode loop
    versions = [int(r["lora_version"]) for r in rows]
    assert versions == sorted(versions)


def test_thread_trainer_checkpoint_resumes(tmp_path):
    _, km, _, _ = make(tmp_path)
    learner = DVILearner(km, dvi_args(tmp_path, "--dvi-online", "true", "--dvi-trainer", "thread"),
                         print_fn=lambda *_: None)
    kangaroo_generate(km, prompts(1)[0], 30, set(), steps=4, threshold=0.0, on_block=learner.on_block)
    learner.bg.close(drain=True)
    learner.finish()
    _, km2, _, _ = make(tmp_path)
    resumed = DVILearner(km2, dvi_args(tmp_path, "--dvi-online", "true", "--dvi-trainer", "thread", "--load-lora",
                                       str(tmp_path / "ckpt" / "final.pt")), print_fn=lambda *_: None)
    assert torch.equal(km2.drafter_head.proj.B, km.drafter_head.proj.B)
    assert torch.equal(resumed.shadow.drafter_head.proj.B, km.drafter_head.proj.B)  # the trainer starts from it
    resumed.finish()


def test_buffer_is_consistent_under_concurrent_push_and_sample():
    """Every field of a slot is written as i (hk, token, pos, the top-1 index): a sample mixing two pushes
    would show different values across fields."""
    V, K = 50, 4
    buf = ring(32, 8, V, "topk", K, torch.float32)
    bad, stop = [], threading.Event()

    def sampler():
        while not stop.is_set():
            if buf.size >= 8:
                s = buf.sample(8)
                i = s.token
                ok = (s.pos == i).all() and (s.hk[:, 0].long() == i).all() and (s.z_idx[:, 0] == i).all()
                if not ok:
                    bad.append(s)

    t = threading.Thread(target=sampler)
    t.start()
    for n in range(3000):
        i = n % V
        z = torch.zeros(V)
        z[i] = 10.0
        buf.push(DVITrainSample(hk=torch.full((8,), float(i)), token=i, z_phi=z, reward=1, pos=i,
                                is_first_reject=False))
    stop.set()
    t.join()
    assert not bad


def test_budget_caps_inline_trainer_time_per_block():
    b = TrainBudget(max_ms=5.0)
    spent, steps = 0.0, 0
    for block in range(1, 1001):
        b.on_block()
        if block % 2 == 0 and b.allow():  # due every 2 blocks; each step costs 40 ms
            b.charge(40.0)
            spent += 40.0
            steps += 1
        assert spent <= 5.0 * block + 40.0  # never more than the allowance plus one step's overshoot
    assert 100 <= steps <= 126 and b.skipped > 0  # ~5/40 of blocks
    free = TrainBudget(None)
    assert all(free.allow() for _ in range(5))


def test_inline_trainer_skips_steps_over_budget(tmp_path):
    _, km, learner, lines = make(tmp_path, "--dvi-online", "true", "--dvi-trainer", "inline",
                                 "--max-online-train-ms", "0")
    kangaroo_generate(km, prompts(1)[0], 30, set(), steps=4, threshold=0.0, on_block=learner.on_block)
    assert learner.train_steps == 0 and learner.budget.skipped > 0  # a zero budget allows no training at all


def test_a_busy_trainer_takes_the_steps_it_owes_when_it_is_free():
    """One step per update_every blocks: the steps a slow trainer could not take when they fell due are taken
    afterwards (as while the decode thread prefills), at most MAX_OWED of them."""
    import threading
    import time
    from types import SimpleNamespace

    from dvi.background_trainer import MAX_OWED, BackgroundTrainer
    from dvi.config import TrainerConfig

    started, release, steps = threading.Event(), threading.Event(), []
    trainer = SimpleNamespace(cfg=TrainerConfig(batch_size=1, update_every=2),
                              step=lambda batch, step: (started.set(), release.wait(), steps.append(step),
                                                        {"ms": 1.0})[3])
    buffer = SimpleNamespace(size=4, sample=lambda n: None)
    empty = SimpleNamespace(drafter_head=None, trained_adapter=None)
    bg = BackgroundTrainer(empty, trainer, buffer, empty)
    bg.on_block(1)
    bg.on_block(2)  # due: the trainer starts its first step, which lasts until released
    assert started.wait(30)
    for block in range(3, 2 * (MAX_OWED + 4) + 3):  # MAX_OWED + 4 more fall due meanwhile: 4 are dropped
        bg.on_block(block)
    release.set()
    deadline = time.time() + 30
    while len(steps) < MAX_OWED + 1 and time.time() < deadline:
        time.sleep(0.01)
    bg.close()
    assert len(steps) == MAX_OWED + 1 and steps[0] == 2  # the first when due, then every owed one
