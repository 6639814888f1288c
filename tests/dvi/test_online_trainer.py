import pytest
import torch
from torch import nn

from dvi import losses as L
from dvi.config import TrainerConfig
from dvi.types import DVITrainSample
from tests.dvi.helpers import ring
from dvi.online_trainer import OnlineTrainer, verifier_tokens
from dvi.presets import PRESETS, LossPreset, get_preset
from dvi.schedule import PiecewiseSchedule

D, V, K, B = 16, 50, 8, 12


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a second intra-op thread only adds spin-wait on a loaded 2-core box (~50x slower steps)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Stub(nn.Module):
    """A ``TrainableDrafter``: a LoRA head, no adapter, the full vocabulary."""
    trained_adapter = rotary_emb = drafter_vocab = None

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(D, V, bias=False).requires_grad_(False)  # the verifier's head
        from kangaroo.drafter_head import DrafterHead
        self.drafter_head = DrafterHead.from_verifier_head(self.head, r=4, alpha=8.0)

    def drafter_logits_from_hk(self, hk):
        return self.drafter_head(hk)


def _batch(store, n=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    buf = ring(n, D, V, store, K, torch.float32, seed=seed)
    target = torch.randn(V, D, generator=g)  # the "verifier" disagrees with the drafter's init
    for i in range(n):
        hk = torch.randn(D, generator=g)
        reward = int(i % 3 != 2)
        buf.push(DVITrainSample(hk, int(torch.randint(V, (1,), generator=g)), 2 * target @ hk, reward, i % 4 + 1,
                                reward == 0))
    return buf.sample(n)


def _trainer(model, store="full", preset="full", warmup=1000, max_ms=None, **kw):
    """``store`` is the batch's business now (the trainer reads it from the Batch); kept for the call sites."""
    sched = PiecewiseSchedule(warmup=warmup, kl0=1.0, klmin=0.25, pgmax=0.5, ramp=10, ce_max=0.8)
    named = isinstance(preset, str)
    cfg = TrainerConfig(lr=kw.pop("lr", 5e-2), tau=1.0, ablation=preset if named else "full", max_ms=max_ms,
                        entropy_weight=kw.pop("entropy_weight", 0.0), kd_top1=kw.pop("kd_top1", 0.0),
                        pg_form=kw.pop("pg_form", "reinforce"))
    return OnlineTrainer(model, cfg, sched, V, preset=None if named else preset, **kw)


@pytest.mark.parametrize("store", ["full", "topk"])
def test_kd_decreases_on_fixed_batch(store):
    m = Stub()
    tr, batch = _trainer(m, store, preset="kd_only"), _batch(store)
    kd = [tr.step(batch, s)["kd"] for s in range(40)]
    assert kd[0] > 0 and kd[-1] < 0.5 * kd[0], (kd[0], kd[-1])
    # the trainer's first KD is the KL of the untrained drafter against the batch's stored logits
    logits = m.head(batch.hk.float())
    ref = (L.kd_forward_kl_full(logits, batch.z_phi, 1.0) if store == "full"
           else L.kd_forward_kl_topk(logits.gather(1, batch.z_idx), batch.z_val, 1.0))
    assert kd[0] == pytest.approx(ref.item(), rel=1e-5)


def test_only_lora_tensors_change():
    m = Stub()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tr, batch = _trainer(m, "topk", warmup=0, entropy_weight=0.01), _batch("topk")
    assert [id(p) for p in tr.optimizer.param_groups[0]["params"]] == [id(m.drafter_head.proj.A),
                                                                       id(m.drafter_head.proj.B)]
    for s in range(5):
        stats = tr.step(batch, 100 + s)
    assert stats["kd"] > 0 and stats["ce"] > 0 and stats["pg"] != 0 and stats["entropy"] > 0
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"drafter_head.proj.A", "drafter_head.proj.B"}
    assert torch.equal(after["head.weight"], after["drafter_head.proj.base.weight"])  # both still the original


def test_trains_inside_no_grad():
    m = Stub()
    tr, batch = _trainer(m), _batch("full")
    with torch.no_grad():
        tr.step(batch, 0)
    assert torch.count_nonzero(m.drafter_head.proj.B) > 0


def test_ms_and_over_budget():
    m, batch = Stub(), _batch("full")
    s = _trainer(m, max_ms=0).step(batch, 0)
    assert s["ms"] > 0 and s["over_budget"] is True
    assert _trainer(m, max_ms=1e9).step(batch, 0)["over_budget"] is False
    assert _trainer(m, max_ms=None).step(batch, 0)["over_budget"] is False


def test_stats_report_schedule_weights():
    m, batch = Stub(), _batch("full")
    tr = _trainer(m, warmup=10)
    s0 = tr.step(batch, 0)
    assert (s0["w_kl"], s0["w_ce"], s0["w_pg"], s0["w_ent"]) == (1.0, 0.0, 0.0, 0.0)
    assert s0["ce"] == 0.0 and s0["pg"] == 0.0 and s0["kd"] > 0 and s0["rkl"] > 0
    assert s0["loss"] == pytest.approx(s0["kd"] + s0["rkl"], rel=1e-5)
    s1 = tr.step(batch, 15)
    assert (s1["w_kl"], s1["w_ce"], s1["w_pg"]) == pytest.approx((0.625, 0.4, 0.25))
    s2 = tr.step(batch, 500)
    assert (s2["w_kl"], s2["w_ce"], s2["w_pg"]) == pytest.approx((0.25, 0.8, 0.5))
    assert s2["loss"] == pytest.approx(0.25 * (s2["kd"] + s2["rkl"]) + 0.8 * s2["ce"] + 0.5 * s2["pg"], rel=1e-4)
    assert s2["n_ce"] == 8 and s2["n_pg"] == 12  # 8 accepted + 4 first rejects
    expected_keys = {"loss", "kd", "rkl", "kd_top1", "ce", "pg", "entropy", "w_kl", "w_ce", "w_pg", "w_ent",
                     "reward_mean", "baseline", "ms", "over_budget", "n_ce", "n_pg", "n_kd_only"}
    assert set(s2) == expected_keys


def test_presets_select_terms():
    batch = _batch("full")
    s = _trainer(Stub(), preset="kd_only", warmup=0).step(batch, 500)
    assert s["w_ce"] == 0.0 and s["w_pg"] == 0.0 and s["ce"] == 0.0 and s["pg"] == 0.0 and s["kd"] > 0
    s = _trainer(Stub(), preset="ce_only").step(batch, 0)  # cold start: full CE weight at step 0
    assert s["w_ce"] == 0.8 and s["ce"] > 0 and s["w_kl"] == 0.0 and s["kd"] == 0.0 and s["rkl"] == 0.0
    assert s["loss"] == pytest.approx(0.8 * s["ce"], rel=1e-5)
    s = _trainer(Stub(), preset="pg_only").step(batch, 0)
    assert s["w_pg"] == 0.5 and s["pg"] != 0.0 and s["w_ce"] == 0.0 and s["kd"] == 0.0
    s = _trainer(Stub(), preset="kd+ce", warmup=0).step(batch, 500)
    assert s["w_ce"] == 0.8 and s["ce"] > 0 and s["w_pg"] == 0.0 and s["kd"] > 0
    s = _trainer(Stub(), preset="kd+pg").step(batch, 0)  # normal schedule: still warming up
    assert s["w_pg"] == 0.0 and s["kd"] > 0
    s = _trainer(Stub(), preset=LossPreset(kd=1.0, rkl=0.0, ce=0.0, pg=0.0)).step(batch, 0)
    assert s["kd"] > 0 and s["rkl"] == 0.0


def test_zero_weight_terms_are_not_computed(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("computed a term whose weight is 0")

    for name in ("ce_accepted", "policy_gradient", "entropy", "kd_reverse_kl_full"):
        monkeypatch.setattr(L, name, boom)
    tr = _trainer(Stub(), preset=LossPreset(kd=1.0, rkl=0.0, ce=1.0, pg=1.0))
    s = tr.step(_batch("full"), 0)  # warm-up: ce/pg weights are 0
    assert s["kd"] > 0 and s["ce"] == s["pg"] == s["entropy"] == s["rkl"] == 0.0
    with pytest.raises(AssertionError, match="weight is 0"):
        tr.step(_batch("full"), 2000)


@pytest.mark.parametrize("store", ["full", "topk"])
def test_kd_top1_trains_on_the_verifiers_token_at_every_row(store):
    m = Stub()
    batch = _batch(store)
    batch.kd_only[: B // 2] = True  # KD-only rows count too
    vt = batch.z_phi.argmax(1) if store == "full" else batch.z_idx[:, 0]
    assert torch.equal(vt, verifier_tokens(batch)) and not torch.equal(vt, batch.token)
    expected = L.kd_top1(m.drafter_head(batch.hk.float()), vt).item()
    tr = _trainer(m, preset="kd_only", kd_top1=0.5)
    s = tr.step(batch, 0)
    assert s["kd_top1"] == pytest.approx(expected, rel=1e-5)
    assert s["loss"] == pytest.approx(s["kd"] + s["rkl"] + 0.5 * s["kd_top1"], rel=1e-5)
    agree = [(m.drafter_head(batch.hk.float()).argmax(1) == vt).float().mean().item()]
    for step in range(60):
        tr.step(batch, step)
    agree.append((m.drafter_head(batch.hk.float()).argmax(1) == vt).float().mean().item())
    assert agree[1] > agree[0] and agree[1] >= 0.9, agree


def test_pg_form_expected_uses_the_verifiers_token():
    m = Stub()
    batch = _batch("full")
    s = _trainer(m, preset=LossPreset(kd=0.0, rkl=0.0, ce=0.0, pg=1.0, cold_start=True), pg_form="expected").step(
        batch, 0)
    logits = Stub().drafter_head(batch.hk.float())  # the same init (seeded), before the step
    expected = L.expected_acceptance(logits, verifier_tokens(batch), batch.reward, batch.is_first_reject)
    assert s["pg"] == pytest.approx(expected.item(), rel=1e-5) and s["pg"] < 0
    with pytest.raises(ValueError, match="pg-form"):
        _trainer(Stub(), pg_form="sampled")


def test_ema_baseline_moves_toward_mean_reward():
    batch = _batch("full")
    tr = _trainer(Stub(), ema_decay=0.5)
    assert tr.ema_baseline == 0.0
    s = tr.step(batch, 0)
    mean_pg = 8 / 12  # pg mask = all 12 samples (8 accepted, 4 first rejects)
    assert s["baseline"] == 0.0 and tr.ema_baseline == pytest.approx(0.5 * mean_pg)
    for i in range(20):
        tr.step(batch, i + 1)
    assert tr.ema_baseline == pytest.approx(mean_pg, abs=1e-4)


def test_get_preset_validation_and_table():
    assert set(PRESETS) == {"full", "kd_only", "ce_only", "pg_only", "kd+ce", "kd+pg"}
    assert get_preset("ce_only").cold_start and not get_preset("kd+ce").cold_start
    with pytest.raises(ValueError, match="--dvi-ablation.*kd_only"):
        get_preset("kd")


def test_state_dict_round_trip():
    batch = _batch("full")
    a = _trainer(Stub())
    a.step(batch, 7)
    b = _trainer(Stub())
    b.load_state_dict(a.state_dict())
    assert b.ema_baseline == a.ema_baseline and b.schedule.step == 7
    assert b.optimizer.state_dict()["state"][0]["step"] == 1
