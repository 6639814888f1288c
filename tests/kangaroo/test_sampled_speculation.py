"""Speculative sampling without losing a bit: with a seed, every drafter under every policy, alone or batched with
other sequences of other params, commits exactly plain sampling's tokens; the drafters propose under the verifier's
noise (a drafter equal to the verifier is always accepted); the policy calibrates per temperature."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.draft_policy import Calibrator, GoodputPolicy, ThresholdStop, calibrated_source, make_policy
from kangaroo.drafters import SuffixMemory, make_drafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.packed_head import configure
from kangaroo.probe_gate import ProbeGate, _logit, committed_prob
from kangaroo.sampling import GREEDY, SamplingParams, pick_rows, token_prob
from kangaroo.speculative import kangaroo_generate
from kangaroo.verify_cost import CostCurve
from tests.helpers import make_tiny_llama, prompts
from tests.kangaroo.test_batched import decode_together

FLAT = CostCurve(shallow_ms=[1.0] * 8, deep_ms=[5.0] * 8, head_ms=0.5)   # drafting pays: goodput drafts
PARAMS = [SamplingParams(1.0, seed=11), SamplingParams(0.7, top_p=0.9, seed=12),
          SamplingParams(1.3, top_k=6, top_p=0.95, seed=13)]


def policy(name):
    return lambda: make_policy(name, threshold=0.0, cost=FLAT)


@pytest.mark.parametrize("kind", ["self", "ngram", "memory", "ngram,memory,self"])
@pytest.mark.parametrize("policy_name", ["threshold", "goodput"])
def test_speculative_sampling_equals_plain_sampling(tiny_llama, kind, policy_name):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    accepted = 0
    for p in PARAMS:
        drafter = make_drafter(kind, 4, policy(policy_name), memory=SuffixMemory())
        for ids in prompts(3):   # one drafter for the prompts in turn: the memory drafter drafts from earlier outputs
            want = greedy_decode(tiny_llama, ids, 30, set(), sampling=p).tokens
            res = kangaroo_generate(km, ids, 30, set(), drafter=drafter, sampling=p)
            assert res.tokens == want, (p, ids)
            assert res.tokens != greedy_decode(tiny_llama, ids, 30, set()).tokens
            accepted += len(res.tokens) - len(res.accept_lengths)
    assert accepted > 0  # drafts were accepted: sampling did not just run plain steps


def test_verify_picks_each_row_at_its_position_up_to_the_first_rejection(tiny_llama):
    """Row j of a block starting after c committed tokens is the pick at position prompt + c + j; sampled, the
    rows past the first rejection are not picked (accept never reads them)."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids, p = prompts(1)[0], PARAMS[1]
    blocks, committed = [], []
    res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0, sampling=p,
                            on_block=lambda b: (blocks.append((b, len(committed))), committed.extend(b.committed)))
    assert res.tokens == committed[:30]
    for blk, c in blocks:
        v = blk.verification
        assert len(v.tokens) == blk.accepted + 1 and v.tokens[-1] == blk.committed[-1]
        assert v.tokens == pick_rows(v.logits, ids.shape[1] + c, p)[:blk.accepted + 1]
    assert any(blk.accepted < blk.drafted for blk, _ in blocks)  # some block stopped picking early


@pytest.mark.parametrize("kind", ["self", "hybrid"])
def test_sequences_of_different_params_batched_each_equal_plain_sampling(tiny_llama, kind):
    """The server's path: several sequences, each with its own seed and temperature (one greedy), one verify pass
    per step (``drafter_step_batch``), and one goodput calibration shared by all of them."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids_list = prompts(4)
    params = [GREEDY, *PARAMS]
    budgets, joins = [30, 12, 25, 18], [0, 0, 3, 7]
    shared = Calibrator()
    drafters = []
    for p in params:
        d = make_drafter(kind, 4, lambda: GoodputPolicy(FLAT, shared))
        d.sample_with(p)
        drafters.append(d)
    got = decode_together(km, drafters, ids_list, budgets, joins)
    for ids, n, p, tokens in zip(ids_list, budgets, params, got):
        assert tokens == greedy_decode(tiny_llama, ids, n, set(), sampling=p).tokens
    sources = {src for src, _ in shared.tried}
    assert "self" in sources and any(s.startswith("self@T") for s in sources)  # greedy and sampled apart


def identity_deep(vocab_perm=None):
    """A verifier whose deep layers add nothing: it equals the drafter (up to the drafter's column order)."""
    lm = make_tiny_llama()
    for layer in lm.model.layers[2:]:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    if vocab_perm is not None:
        km.set_drafter_vocab(vocab_perm)
    return lm, km


@pytest.mark.parametrize("pruned", [False, True])
def test_a_drafter_equal_to_the_verifier_is_always_accepted_under_sampling(pruned):
    """The self-drafter proposes the argmax of its perturbed scores under the verifier's noise at the same position
    (indexed by full-vocabulary id: a permuted pruned head too), so a perfect drafter is always accepted."""
    perm = torch.randperm(97, generator=torch.Generator().manual_seed(4)) if pruned else None
    lm, km = identity_deep(perm)
    for p in PARAMS:
        res = kangaroo_generate(km, prompts(1)[0], 28, set(), steps=3, threshold=0.0, sampling=p)
        assert res.tokens == greedy_decode(lm, prompts(1)[0], 28, set(), sampling=p).tokens
        assert res.accept_lengths == [4] * 7, p


@pytest.mark.skipif(cpu_engine.extension() is None, reason="the C++ engine is not built here")
def test_the_packed_int8_head_proposes_under_the_noise_and_stays_lossless():
    lm = make_tiny_llama(dtype=torch.float32, vocab_size=256)
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    configure(km, "int8", frozen=True)
    for p in PARAMS:
        ids = torch.randint(3, 256, (1, 9), generator=torch.Generator().manual_seed(p.seed))
        res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0, sampling=p)
        assert res.tokens == greedy_decode(lm, ids, 30, set(), sampling=p).tokens
    assert km.packed_head is not None and km.packed_head.precision == "int8"  # the kernel ran


def test_calibration_is_kept_per_temperature_bucket():
    assert calibrated_source("self", 0.0) == "self"   # greedy: the keys of every existing checkpoint
    assert calibrated_source("self", 0.7) == "self@T<=0.75" and calibrated_source("ngram", 3.0) == "ngram@T>1.5"
    cal = Calibrator(prior_weight=1.0)
    for _ in range(20):
        cal.update(0.8, False, "self", temperature=1.0)   # sampled at T = 1: rejected
    assert cal.p(0.8, "self", 1.0) < 0.1 and cal.p(0.8, "self") == pytest.approx(0.8)  # greedy untouched
    pol = GoodputPolicy(FLAT, cal)
    pol.sample_with(SamplingParams(1.0))
    assert pol.decide([0.8]) == (False, False)       # at T = 1 a 0.8 candidate does not pay
    pol.sample_with(GREEDY)
    assert pol.decide([0.8]) == (True, True)         # greedy, it does


def test_the_gate_reads_the_sampled_token_and_the_temperature(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    blocks = []
    p = SamplingParams(1.2, top_p=0.9, seed=3)
    kangaroo_generate(km, prompts(1)[0], 12, set(), drafter=make_drafter("self", 3, lambda: ThresholdStop(0.0)),
                      sampling=p, on_block=blocks.append)
    blk = blocks[-1]
    row, tok = blk.verification.logits[blk.accepted], blk.verification.tokens[blk.accepted]
    gate = ProbeGate(FLAT)
    gate.note(blk)
    f = gate.features()   # greedy: the verifier's top probability, no temperature
    assert f[3] == 0.0 and f[1] == pytest.approx(_logit(committed_prob(row)))
    gate.sample_with(p)
    gate.note(blk)
    f = gate.features()
    assert f[3] == 1.2 and f[1] == pytest.approx(_logit(token_prob(row, tok, p)))
    assert token_prob(row, tok, p) != pytest.approx(committed_prob(row))  # sampled: not the top token's
