"""The pruned drafter vocabulary (FR-Spec): sub-head logits, losslessness, trainer losses in the sub-space,
checkpoints across vocabularies, counting and coverage."""
import numpy as np
import pytest
import torch

from dvi import losses as L
from dvi.checkpoint import CheckpointError, load_ckpt, save_ckpt
from dvi.config import TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.schedule import PiecewiseSchedule
from dvi.types import Batch
from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.drafters import SelfDrafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from kangaroo.subvocab import count_tokens, coverage, load_counts, save_counts, top_ids
from tests.helpers import make_tiny_llama

KEEP = list(range(3, 97, 2)) + [2]  # 48 of 97 tokens


def pruned(lm=None, head=False):
    km = KangarooModel(model_id="tiny", base_model=lm or make_tiny_llama(), exit_layer=2)
    km.set_drafter_vocab(KEEP)
    if head:
        attach_drafter_head(km, r=4, alpha=8.0)
    return km


@pytest.mark.parametrize("head", [False, True])
def test_sub_head_logits_are_the_full_heads_rows(head):
    km = pruned(head=head)
    hk = torch.randn(5, 32, dtype=torch.float64)
    full = km.head_model(hk).float()
    torch.testing.assert_close(km.drafter_logits_from_hk(hk), full[:, KEEP])
    assert km.drafter_token_id(3) == KEEP[3]


@pytest.mark.parametrize("head", [False, True])
def test_pruned_drafter_is_lossless_and_drafts_only_kept_tokens(head):
    lm = make_tiny_llama()
    km = pruned(lm, head=head)
    ids = torch.randint(3, 97, (1, 7), generator=torch.Generator().manual_seed(2))
    drafted = []
    res = kangaroo_generate(km, ids, 40, set(), drafter=SelfDrafter(4, ThresholdStop(0.0)),
                            on_block=lambda b: drafted.extend(b.draft.tokens))
    assert res.tokens == greedy_decode(lm, ids, 40, set()).tokens
    assert drafted and set(drafted) <= set(KEEP)


def test_restrict_topk_is_the_kl_over_the_intersection():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    valid = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 1]], dtype=torch.bool)
    ra, rb = L.restrict_topk(a, b, valid)
    assert ra.shape == (2, 6)  # the row with nothing inside is dropped
    want = torch.stack([L.kd_forward_kl_topk(a[i, valid[i]][None], b[i, valid[i]][None], 1.5) for i in (0, 2)]).mean()
    torch.testing.assert_close(L.kd_forward_kl_topk(ra, rb, 1.5), want)
    a.requires_grad_(True)
    ra, rb = L.restrict_topk(a, b, valid)
    (L.kd_forward_kl_topk(ra, rb, 1.5) + L.kd_reverse_kl_topk(ra, rb, 1.5)).backward()
    assert torch.isfinite(a.grad).all() and (a.grad[~valid] == 0).all()


def batch(km, store, n=16, k=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 97, generator=g) * 3
    val, idx = z.topk(k)
    tokens = torch.tensor(KEEP[:n])
    tokens[0] = 4  # a target outside the sub-vocabulary
    kept = dict(z_phi=z) if store == "full" else dict(z_idx=idx, z_val=val)
    return Batch(hk=torch.randn(n, 32, generator=g).half(), token=tokens, reward=torch.ones(n),
                 pos=torch.ones(n, dtype=torch.long), is_first_reject=torch.zeros(n, dtype=torch.bool), **kept)


@pytest.mark.parametrize("store", ["topk", "full"])
def test_trainer_trains_in_the_sub_vocabulary(store):
    km = pruned(head=True)
    sched = PiecewiseSchedule(0, 1.0, 1.0, 0.2)
    t = OnlineTrainer(km, TrainerConfig(lr=0.05, tau=1.5, ablation="full", max_ms=None), sched, 97)
    b = batch(km, store)
    stats = t.step(b, 10)
    assert all(np.isfinite(stats[k]) for k in ("loss", "kd", "rkl", "ce", "pg"))
    assert stats["kd"] > 0 and stats["ce"] > 0 and km.drafter_head.proj.B.abs().sum() > 0
    # CE only where the target is inside: the row with token 4 does not count
    sub = torch.tensor([KEEP.index(int(x)) for x in b.token[1:]])
    with torch.no_grad():
        km2 = pruned(head=True)
        km2.drafter_head.load_state_dict(km.drafter_head.state_dict())
        t2 = OnlineTrainer(km2, TrainerConfig(lr=0.05, tau=1.5, ablation="ce_only", max_ms=None),
                           PiecewiseSchedule(0, 0.0, 0.0, 0.0), 97)
    logits = km2.drafter_logits_from_hk(b.hk[1:].double()).detach()  # the step reports CE before its update
    ce = t2.step(b, 10)["ce"]
    assert ce == pytest.approx(float(-torch.log_softmax(logits, -1).gather(1, sub[:, None]).mean()), rel=1e-5)


def test_full_vocab_checkpoint_loads_into_a_pruned_head_and_not_back(tmp_path):
    lm = make_tiny_llama()
    full = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    attach_drafter_head(full, r=4, alpha=8.0)
    with torch.no_grad():
        full.drafter_head.proj.B.normal_()
    save_ckpt(tmp_path / "full.pt", full, None, None, 0.0)
    km = pruned(lm, head=True)
    load_ckpt(tmp_path / "full.pt", km, None, None)
    hk = torch.randn(4, 32, dtype=torch.float64)
    torch.testing.assert_close(km.drafter_logits_from_hk(hk), full.drafter_logits_from_hk(hk)[:, KEEP])
    save_ckpt(tmp_path / "pruned.pt", km, None, None, 0.0)
    full2 = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    attach_drafter_head(full2, r=4, alpha=8.0)
    with pytest.raises(CheckpointError, match="pruned drafter vocabulary"):
        load_ckpt(tmp_path / "pruned.pt", full2, None, None)


class WordTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


def test_counts_top_ids_and_coverage(tmp_path):
    import json

    lines = [{"conversations": [{"from": "human", "value": "ignored words here"}, {"from": "gpt", "value": v}]}
             for v in ("aa bb c", "dd e", "fff")]
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    counts = count_tokens(WordTokenizer(), p, 10, skip_lines=1)
    assert counts.tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # lines 1.. only, gpt turns only
    save_counts(tmp_path / "c.npz", counts, {"x": 1})
    c2, meta = load_counts(tmp_path / "c.npz")
    assert c2.tolist() == counts.tolist() and meta == {"x": 1}
    ids = top_ids(np.array([5, 9, 9, 0, 1]), 3, always=[3])
    assert ids.tolist() == [3, 1, 2]
    assert coverage([[1, 2], [3, 4]], ids) == 0.75
