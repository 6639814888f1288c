"""DVI checkpoints on a stub model: round trip, no base weights, refusals that change nothing, atomic writes."""
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dvi.checkpoint import (CheckpointError, checkpoint_path, load_ckpt, load_lora_state_dict, lora_state_dict,
                            read_ckpt, save_ckpt)
from dvi.schedule import PiecewiseSchedule
from kangaroo.drafter_head import DrafterHead

D, V = 16, 50


class Stub(nn.Module):
    """A ``SavedDrafter``: a bare drafter head (no verifier head, adapter or pruned vocabulary)."""
    head_model = trained_adapter = rotary_emb = drafter_vocab = None

    def __init__(self, seed=0, model_id="assets/tiny", exit_layer=2, r=4, alpha=8.0, vocab=V, head_seed=0):
        super().__init__()
        self.model_id, self.exit_layer = model_id, exit_layer
        self.config = SimpleNamespace(hidden_size=D, vocab_size=vocab, num_hidden_layers=4)
        torch.manual_seed(head_seed)  # the same frozen base head in every stub (same model), unless told otherwise
        self.drafter_head = DrafterHead(D, vocab, r=r, alpha=alpha)
        torch.manual_seed(seed)
        self.drafter_head.proj.reset_lora_parameters()


def trainer_state(model, steps=3):
    opt = torch.optim.AdamW(model.drafter_head.trainable_params(), lr=1e-2)
    sched = PiecewiseSchedule(warmup=5, kl0=1.0, klmin=0.1, pgmax=0.5)
    for _ in range(steps):
        opt.zero_grad()
        model.drafter_head(torch.randn(4, D)).logsumexp(-1).mean().backward()
        opt.step()
    sched.set_step(steps)
    return opt, sched


def trained(tmp_path, name="final.pt", **kw):
    m = Stub(**kw)
    opt, sched = trainer_state(m)
    path = tmp_path / "ck" / name
    save_ckpt(path, m, opt, sched, 0.37, global_step=3, extra={"train_steps": 3, "ablation": "full"})
    return m, opt, sched, path


def lora_equal(a, b):
    sa, sb = lora_state_dict(a), lora_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_resumes_exactly(tmp_path):
    m, opt, sched, path = trained(tmp_path)
    assert sorted(lora_state_dict(m)) == ["A", "B"]  # the drafter head's own names, no attribute path
    m2 = Stub(seed=1)
    opt2, sched2 = trainer_state(m2, steps=1)
    assert not lora_equal(m, m2)
    assert load_ckpt(path, m2, opt2, sched2) == pytest.approx(0.37)
    assert lora_equal(m, m2) and sched2.step == 3
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[i][k], s2[i][k]) for i in s1 for k in s1[i])
    ck = read_ckpt(path)
    assert ck["global_step"] == 3 and ck["extra"] == {"train_steps": 3, "ablation": "full"}
    assert ck["meta"]["lora_r"] == 4 and ck["meta"]["exit_layer"] == 2 and ck["meta"]["vocab_size"] == V
    # same grads from here on -> same parameters: the optimizer really resumed
    x = torch.randn(4, D)
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad()
        mm.drafter_head(x).logsumexp(-1).mean().backward()
        oo.step()
    assert lora_equal(m, m2)


def test_file_holds_no_base_weights(tmp_path):
    _, _, _, path = trained(tmp_path)
    tensors = []

    def walk(x):
        if torch.is_tensor(x):
            tensors.append(x)
        for v in x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else ():
            walk(v)

    walk(torch.load(path, weights_only=True))
    assert tensors and not any(tuple(t.shape) in ((V, D), (D, V)) for t in tensors)
    assert sum(t.numel() for t in tensors) < 4 * (4 * D + V * 4) + 10  # A, B and two Adam moments each


def test_deploy_load_without_optimizer(tmp_path):
    m, _, _, path = trained(tmp_path)
    m2 = Stub(seed=1)
    assert load_ckpt(path, m2, None, None) == pytest.approx(0.37)
    assert lora_equal(m, m2)


@pytest.mark.parametrize("kw, old, new, fix", [
    ({"exit_layer": 3}, "exit_layer=2", "exit_layer=3", "--exitlayer 2"),
    ({"r": 8}, "lora_r=4", "lora_r=8", "--dvi-lora-r 4"),
    ({"alpha": 16.0}, "lora_alpha=8.0", "lora_alpha=16.0", "--dvi-lora-alpha 8.0"),
    ({"vocab": 60}, "vocab_size=50", "vocab_size=60", "--model-id assets/tiny"),
    ({"model_id": "other/model", "head_seed": 1}, "model_id=assets/tiny", "model_id=other/model",
     "--model-id assets/tiny"),
])
def test_mismatched_meta_is_refused_and_changes_nothing(tmp_path, kw, old, new, fix):
    _, _, _, path = trained(tmp_path)
    m2 = Stub(seed=1, **kw)
    opt2, sched2 = trainer_state(m2, steps=1)
    before, opt_before = lora_state_dict(m2), opt2.state_dict()
    with pytest.raises(CheckpointError) as e:
        load_ckpt(path, m2, opt2, sched2)
    msg = str(e.value)
    assert f"made for {old} but this run has {new}: pass {fix}" in msg and "train a new drafter" in msg
    assert all(torch.equal(before[k], v) for k, v in lora_state_dict(m2).items())
    assert sched2.step == 1 and opt2.state_dict()["state"][0]["step"] == opt_before["state"][0]["step"]


def test_same_weights_match_whatever_the_path(tmp_path):
    _, _, _, path = trained(tmp_path)
    load_ckpt(path, Stub(seed=1, model_id="/somewhere/else/tiny/"), None, None)
    load_ckpt(path, Stub(seed=1, model_id="smollm2-135m"), None, None)  # an alias of the same weights


def test_other_weights_under_the_same_name_are_refused(tmp_path):
    _, _, _, path = trained(tmp_path)
    with pytest.raises(CheckpointError, match="another model of the same name assets/tiny"):
        load_ckpt(path, Stub(seed=1, head_seed=1), None, None)


def test_checkpoint_without_head_sample_falls_back_to_the_name(tmp_path):
    _, _, _, path = trained(tmp_path)
    ck = torch.load(path, weights_only=True)
    del ck["meta"]["head_sample"]  # as written before the sample existed
    torch.save(ck, path)
    load_ckpt(path, Stub(seed=1, model_id="/elsewhere/tiny"), None, None)
    with pytest.raises(CheckpointError, match="model_id=assets/tiny but this run has model_id=other"):
        load_ckpt(path, Stub(seed=1, model_id="other"), None, None)


def test_resume_keeps_this_runs_learning_rate(tmp_path):
    _, _, _, path = trained(tmp_path)  # saved with lr 1e-2
    m2 = Stub(seed=1)
    opt2 = torch.optim.AdamW(m2.drafter_head.trainable_params(), lr=3e-4)
    sched2 = PiecewiseSchedule(warmup=5, kl0=1.0, klmin=0.1, pgmax=0.5)
    load_ckpt(path, m2, opt2, sched2)
    assert opt2.param_groups[0]["lr"] == 3e-4
    assert opt2.state_dict()["state"][0]["step"] == 3  # the moments and step counts are restored


def test_non_dict_schedule_is_refused(tmp_path):
    _, _, _, path = trained(tmp_path)
    ck = torch.load(path, weights_only=True)
    ck["schedule"] = [1, 2]
    torch.save(ck, path)
    m2 = Stub(seed=1)
    opt2, sched2 = trainer_state(m2, steps=1)
    with pytest.raises(CheckpointError, match="no valid schedule state"):
        load_ckpt(path, m2, opt2, sched2)


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_damaged_file_is_refused_and_others_untouched(tmp_path, damage):
    m, _, _, good = trained(tmp_path, name="step_00000001.pt")
    good_bytes = good.read_bytes()
    bad = good.parent / "step_00000002.pt"
    bad.write_bytes({"random": os.urandom(3000), "truncated": good_bytes[:len(good_bytes) // 2], "empty": b""}[damage])
    m2 = Stub(seed=1)
    before = lora_state_dict(m2)
    with pytest.raises(CheckpointError, match=r"damaged or truncated.*use another checkpoint.*untouched"):
        load_ckpt(bad, m2, None, None)
    assert good.read_bytes() == good_bytes
    assert all(torch.equal(before[k], v) for k, v in lora_state_dict(m2).items())
    load_ckpt(good, m2, None, None)
    assert lora_equal(m, m2)


def test_missing_foreign_and_unsafe_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist.*--save-lora-path"):
        read_ckpt(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_ckpt(tmp_path)
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a Kangaroo-DVI LoRA checkpoint"):
        read_ckpt(tmp_path / "foreign.pt")
    torch.save({"format": "kangaroo-dvi-lora", "obj": SimpleNamespace(a=1)}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="holds Python objects"):
        read_ckpt(tmp_path / "unsafe.pt")


def test_resume_needs_optimizer_state(tmp_path):
    m = Stub()
    save_ckpt(tmp_path / "deploy.pt", m, None, None, 0.0)
    m2 = Stub(seed=1)
    opt2, sched2 = trainer_state(m2, steps=1)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_ckpt(tmp_path / "deploy.pt", m2, opt2, sched2)
    load_ckpt(tmp_path / "deploy.pt", m2, None, None)
    assert lora_equal(m, m2)


def test_crash_during_save_keeps_previous_file(tmp_path, monkeypatch):
    m, opt, sched, path = trained(tmp_path)
    before = path.read_bytes()

    def crashing_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_ckpt(path, m, opt, sched, 0.5, global_step=9)
    with pytest.raises(OSError, match="disk full"):
        save_ckpt(path.parent / "new.pt", m, opt, sched, 0.5)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]  # no temp files, no half-written new.pt


def test_lora_load_refuses_missing_extra_and_shape(tmp_path):
    m = Stub()
    sd = lora_state_dict(Stub(seed=1))
    before = lora_state_dict(m)
    for bad, what in (({k: v for k, v in sd.items() if k == "A"}, "missing B"),
                      ({**sd, "x": torch.zeros(1)}, "unexpected x"),
                      ({**sd, "A": torch.zeros(8, D)}, "shape [8, 16], expected [4, 16]")):
        with pytest.raises(CheckpointError, match=what.replace("[", r"\[").replace("]", r"\]")):
            load_lora_state_dict(m, bad)
    assert all(torch.equal(before[k], v) for k, v in lora_state_dict(m).items())
    load_lora_state_dict(m, sd)
    assert all(torch.equal(sd[k], v) for k, v in lora_state_dict(m).items())


def test_paths_and_unsaveable_extra(tmp_path):
    assert checkpoint_path("d", 42).as_posix() == "d/step_00000042.pt"
    assert checkpoint_path("d").as_posix() == "d/final.pt"
    with pytest.raises(TypeError, match="extra"):
        save_ckpt(tmp_path / "x.pt", Stub(), None, None, 0.0, extra={"p": object()})
    assert not (tmp_path / "x.pt").exists()
