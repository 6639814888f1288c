"""Dense supervision (issue 12): KD-only tuples from every committed position of a verify pass and from a budget of
prompt positions. Lossless, right targets (the verifier's logits of the next token, the hk of that position),
CE/PG blind to KD-only rows, nothing extra when off."""
import pytest
import torch

from dvi import losses as L
from dvi.block_samples import block_samples, prefill_samples
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.presets import LossPreset
from dvi.types import Batch
from kangaroo.drafters import DrafterChain, NGramDrafter, SelfDrafter
from kangaroo.greedy import greedy_decode
from kangaroo.speculative import kangaroo_generate, pick_prefill_positions
from tests.dvi.test_online_loop import make
from tests.kangaroo.test_drafters import repetitive_prompt

N_NEW = 24


def reference(lm, km, seq):
    """The full model's logits and the layer-k drafter features at every position of ``seq`` [1, n], one pass."""
    caches = km.new_caches(seq.shape[1] + 4)
    hk = km.forward_shallow(seq, caches.shallow).hk[0]
    return lm(seq).logits[0], hk


def hybrid():
    return DrafterChain([NGramDrafter(4), SelfDrafter(4)])


@pytest.mark.parametrize("drafter", [hybrid, lambda: SelfDrafter(4)])
def test_lossless_with_dense_on_and_tuples_only_from_committed_rows(tmp_path, drafter):
    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true", "--dvi-dense", "true",
                              "--dvi-prefill-positions", "5", "--dvi-buffer-size", "512")
    assert learner.prefill_positions == 5
    ids = repetitive_prompt()
    blocks, prefills = [], []
    on_block, on_prefill = learner.on_block, learner.on_prefill
    res = kangaroo_generate(km, ids, N_NEW, set(), drafter=drafter(),
                            on_block=lambda b: (blocks.append(b), on_block(b)),
                            on_prefill=lambda t: (prefills.append(t), on_prefill(t)),
                            prefill_positions=learner.prefill_positions)
    assert res.tokens == greedy_decode(lm, ids, N_NEW, set()).tokens
    assert learner.train_steps > 0
    # every committed row 0..a of every block gives exactly one tuple; rows past a (rejected drafts) none
    for b in blocks:
        samples = block_samples(b, dense=True)
        rows = sorted(s.pos - 1 for s in samples if s.pos - 1 <= b.accepted)
        assert rows == list(range(b.accepted + 1)), (b.draft.source, b.drafted, b.accepted)
        assert all(s.pos - 1 <= b.accepted for s in samples if s.kd_only)
    n_dense = sum(s.kd_only for b in blocks for s in block_samples(b, dense=True))
    assert n_dense > 0 and learner.observer.kd_only == n_dense + 5
    assert int(learner.buffer.kd_only[:learner.buffer.size].sum()) == n_dense + 5
    assert len(prefills) == 1 and len(prefills[0].positions) == 5
    s = learner.finish()
    assert s["prefill_tuples"] == 5 and s["kd_only_tuples"] == n_dense + 5 and s["prefill_ms_total"] > 0
    assert (tmp_path / "metrics" / "prefill.csv").read_text().splitlines()[0] == \
        "prompt,prompt_len,positions,logits_ms,push_ms"


def test_committed_and_prefill_tuples_carry_the_verifiers_next_token_logits(tmp_path):
    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true", "--dvi-dense", "true",
                              "--dvi-prefill-positions", "4")
    ids = repetitive_prompt()
    blocks, prefills = [], []
    res = kangaroo_generate(km, ids, N_NEW, set(), drafter=hybrid(), on_block=blocks.append,
                            on_prefill=prefills.append, prefill_positions=4)
    committed = [t for b in blocks for t in b.committed]  # the last block may commit past N_NEW
    assert committed[:N_NEW] == res.tokens == greedy_decode(lm, ids, N_NEW, set()).tokens
    seq = torch.cat([ids, torch.tensor([committed])], dim=1)
    ref_logits, ref_hk = reference(lm, km, seq)
    # prompt positions: row r predicts the prompt token after position p, from the hk at p
    (t,) = prefills
    assert t.positions == pick_prefill_positions(ids.shape[1] - 1, 4) and t.positions[-1] == ids.shape[1] - 2
    for s, p in zip(prefill_samples(t), t.positions):
        assert s.kd_only and s.reward == 0 and not s.is_first_reject and s.token == int(ids[0, p + 1])
        torch.testing.assert_close(s.z_phi, ref_logits[p], rtol=0, atol=1e-6)
        torch.testing.assert_close(s.hk, ref_hk[p].to(torch.float16), rtol=0, atol=2e-3)
    # committed rows: row j of a block starting at x (position start) predicts the token at start + j + 1
    start, sources, checked = ids.shape[1] - 1, set(), 0
    for b in blocks:
        for s in block_samples(b, dense=True):
            if s.kd_only:
                j = s.pos - 1
                assert j <= b.accepted and s.token == int(seq[0, start + j + 1]) == b.verification.tokens[j]
                torch.testing.assert_close(s.z_phi, ref_logits[start + j], rtol=0, atol=1e-6)
                torch.testing.assert_close(s.hk, ref_hk[start + j].to(torch.float16), rtol=0, atol=2e-3)
                sources.add(b.draft.source)
                checked += 1
        start += len(b.committed)
    assert checked and sources == {"ngram", "self"}  # n-gram rows and a fully accepted self block's row m


def test_dense_off_pushes_only_judged_tuples_and_scores_no_prompt(tmp_path):
    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true", "--dvi-dense", "false", "--dvi-prefill-positions", "8")
    assert learner.prefill_positions == 0  # dense off: the budget is not used
    ids = repetitive_prompt()
    blocks, prefills = [], []
    on_block = learner.on_block
    kangaroo_generate(km, ids, N_NEW, set(), drafter=hybrid(), on_block=lambda b: (blocks.append(b), on_block(b)),
                      on_prefill=prefills.append, prefill_positions=learner.prefill_positions)
    assert prefills == [] and learner.observer.kd_only == 0
    assert learner.buffer.size == sum(len(block_samples(b)) for b in blocks)
    assert not learner.buffer.kd_only.any()


def test_pick_prefill_positions_bounds():
    assert pick_prefill_positions(10, 0) == [] and pick_prefill_positions(0, 5) == []
    assert pick_prefill_positions(3, 8) == [0, 1, 2]
    assert pick_prefill_positions(10, 1) == [9]
    for n, k in ((10, 4), (100, 32), (33, 32), (7, 2)):
        p = pick_prefill_positions(n, k)
        assert len(p) == k and p[0] == 0 and p[-1] == n - 1 and p == sorted(set(p))


def _batch(V=11, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    kd_only = torch.tensor([False, True] * (n // 2))
    # KD-only rows made to look like accepted drafts and first rejects: only the flag keeps CE/PG off them
    reward = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    first = torch.tensor([False, False, True, True, False, True, False, False])
    return (torch.randn(n, V, generator=g), torch.randint(V, (n,), generator=g), reward, first, kd_only)


def test_ce_and_pg_skip_kd_only_rows():
    logits, tok, rw, fr, ko = _batch()
    keep = ~ko
    assert L.ce_mask(rw, fr, ko).tolist() == ((rw > 0.5) & keep).tolist()
    assert L.pg_mask(rw, fr, ko).tolist() == (((rw > 0.5) | fr) & keep).tolist()
    torch.testing.assert_close(L.ce_accepted(logits, tok, rw, ko), L.ce_accepted(logits[keep], tok[keep], rw[keep]))
    torch.testing.assert_close(L.policy_gradient(logits, tok, rw, fr, 0.3, ko),
                               L.policy_gradient(logits[keep], tok[keep], rw[keep], fr[keep], 0.3))
    assert not torch.allclose(L.ce_accepted(logits, tok, rw, ko), L.ce_accepted(logits, tok, rw))
    assert not torch.allclose(L.policy_gradient(logits, tok, rw, fr, 0.3, ko),
                              L.policy_gradient(logits, tok, rw, fr, 0.3))
    # all rows KD-only: no CE/PG sample at all, and a zero with a graph
    ce = L.ce_accepted(logits.requires_grad_(), tok, rw, torch.ones_like(ko))
    assert ce.item() == 0 and ce.requires_grad


class _Head(torch.nn.Module):
    def __init__(self, d, V):
        super().__init__()
        self.lin = torch.nn.Linear(d, V, bias=False)
        self.weight_device, self.weight_dtype = torch.device("cpu"), torch.float32

    def forward(self, hk):
        return self.lin(hk)

    def trainable_params(self):
        return list(self.lin.parameters())


class _Drafter:
    drafter_vocab = trained_adapter = rotary_emb = None

    def __init__(self, d, V):
        torch.manual_seed(0)
        self.drafter_head = _Head(d, V)


def test_trainer_kd_only_rows_feed_kd_but_not_ce_pg_or_baseline():
    d, V = 6, 11
    logits, tok, rw, fr, ko = _batch(V)
    hk = torch.randn(8, d).half()
    z = torch.randn(8, V) * 3
    cold = LossPreset(kd=1, rkl=0, ce=1, pg=1, cold_start=True)
    full = Batch(hk=hk, token=tok, reward=rw, pos=torch.ones(8, dtype=torch.long), is_first_reject=fr, z_phi=z,
                 kd_only=ko)
    judged = Batch(hk=hk[~ko], token=tok[~ko], reward=rw[~ko], pos=torch.ones(4, dtype=torch.long),
                   is_first_reject=fr[~ko], z_phi=z[~ko])
    stats = [OnlineTrainer(_Drafter(d, V), TrainerConfig(max_ms=None), ScheduleConfig(warmup=0), V, preset=cold)
             .step(b, 10) for b in (full, judged)]
    assert stats[0]["ce"] == pytest.approx(stats[1]["ce"]) and stats[0]["pg"] == pytest.approx(stats[1]["pg"])
    assert stats[0]["kd"] != pytest.approx(stats[1]["kd"])  # KD does see the extra rows
    assert (stats[0]["n_ce"], stats[0]["n_pg"], stats[0]["n_kd_only"]) == (stats[1]["n_ce"], stats[1]["n_pg"], 4)
    assert stats[0]["reward_mean"] == pytest.approx(stats[1]["reward_mean"])
    assert Batch(hk=hk, token=tok, reward=rw, pos=tok, is_first_reject=fr, z_phi=z).kd_only.tolist() == [False] * 8
