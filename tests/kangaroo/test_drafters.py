"""The drafter seam: every drafter and chain (self, n-gram, memory, hybrid, ngram,memory,self) under every policy
reproduces greedy decoding; the n-gram index; verify without hidden states; zero-draft blocks; the goodput policy.
The chain's bookkeeping: tests/kangaroo/test_drafters_chain.py; the memory: tests/kangaroo/test_drafters_memory.py."""
import random

import pytest
import torch

from kangaroo.draft_policy import Calibrator, GoodputPolicy, ThresholdStop, expected_committed, make_policy
from kangaroo.drafters import DrafterChain, NGramDrafter, NGramIndex, SelfDrafter, make_drafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import Draft, kangaroo_generate, prefill, self_draft, verify
from kangaroo.verify_cost import CostCurve, measure_cost_curve

FLAT = CostCurve(shallow_ms=[1.0] * 8, deep_ms=[5.0] * 8, head_ms=0.5)           # verifying n costs like 1
STEEP = CostCurve(shallow_ms=[1.0 * n for n in range(1, 9)], deep_ms=[50.0 * n for n in range(1, 9)], head_ms=0.5)


def repetitive_prompt(vocab=97):
    """A prompt with repeated spans, so prompt lookup has matches from the first block on."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(3, vocab, (1, 5), generator=g), torch.randint(3, vocab, (1, 4), generator=g)
    return torch.cat([a, b, a, b, a[:, :3]], dim=1)


def policy_factory(kind, threshold=0.3, cost=FLAT):
    return lambda: make_policy(kind, threshold, cost)


@pytest.mark.parametrize("kind", ["self", "ngram", "memory", "hybrid", "ngram,memory,self"])
@pytest.mark.parametrize("policy,cost", [("threshold", None), ("goodput", FLAT), ("goodput", STEEP)])
@pytest.mark.parametrize("steps", [1, 3, 6])
def test_every_drafter_is_lossless(tiny_llama, kind, policy, cost, steps):
    """One drafter for all requests, as when serving: the memory drafter drafts from the earlier outputs (a prompt
    asked again)."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    drafter = make_drafter(kind, steps, policy_factory(policy, cost=cost))
    prompts = (repetitive_prompt(), torch.randint(3, 97, (1, 7), generator=torch.Generator().manual_seed(1)))
    for ids in prompts + (prompts[1:] if "memory" in kind else ()):
        ref = greedy_decode(tiny_llama, ids, 40, set()).tokens
        res = kangaroo_generate(km, ids, 40, set(), drafter=drafter)
        assert res.tokens == ref
        assert sum(res.accept_lengths) == 40 and all(1 <= a <= steps + 1 for a in res.accept_lengths)


def test_self_drafter_under_threshold_is_todays_kangaroo(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids = repetitive_prompt()
    old = kangaroo_generate(km, ids, 40, set(), steps=4, threshold=0.5)
    new = kangaroo_generate(km, ids, 40, set(), drafter=SelfDrafter(4, ThresholdStop(0.5)))
    assert new.tokens == old.tokens and new.accept_lengths == old.accept_lengths


def test_ngram_drafter_drafts_and_gets_accepted(tiny_llama):
    """Not vacuous: on a repetitive prompt the n-gram drafter proposes tokens and the verifier accepts some."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    blocks = []
    kangaroo_generate(km, repetitive_prompt(), 40, set(), drafter=NGramDrafter(4),
                      on_block=lambda b: blocks.append((b.drafted, b.accepted, b.draft.source)))
    assert {s for *_, s in blocks} == {"ngram"}
    assert sum(d for d, _, _ in blocks) > 0 and sum(a for _, a, _ in blocks) > 0
    assert len(blocks) < 40  # fewer verifier passes than tokens


def brute_lookup(history, k, nmin, nmax):
    for n in range(nmax, nmin - 1, -1):
        if len(history) < n:
            continue
        suffix = history[-n:]
        for e in range(len(history) - 1, n - 1, -1):  # latest earlier occurrence with a continuation
            if history[e - n:e] == suffix:
                return history[e:e + k], n
    return [], 0


def test_ngram_index_matches_brute_force_as_history_grows():
    rng = random.Random(0)
    for _ in range(30):
        nmin, nmax = rng.choice([(1, 1), (1, 3), (2, 4)])
        idx = NGramIndex(nmin, nmax)
        hist = [rng.randrange(6) for _ in range(rng.randrange(1, 5))]
        for _ in range(25):
            assert idx.lookup(hist, 4) == brute_lookup(hist, 4, nmin, nmax)
            hist += [rng.randrange(6) for _ in range(rng.randrange(1, 4))]


def test_verify_without_hidden_states_equals_verify_with_them(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids = repetitive_prompt()
    c1, c2 = km.new_caches(64), km.new_caches(64)
    last = prefill(km, ids, c1)
    prefill(km, ids, c2)
    d_self = self_draft(km, last, c1, 4, ThresholdStop(0.0))
    v_self = verify(km, d_self, c1)
    d_bare = Draft(list(d_self.tokens), None, None, [1.0] * 4, source="ngram", last_token=last)
    v_bare = verify(km, d_bare, c2)
    assert v_bare.tokens == v_self.tokens
    torch.testing.assert_close(v_bare.logits, v_self.logits)
    assert c2.shallow.length == c2.deep.length == c1.deep.length == ids.shape[1] + 4
    # a draft covering a prefix only: the rest is run through the shallow layers by verify
    c3 = km.new_caches(64)
    prefill(km, ids, c3)
    h0 = km.forward_shallow(torch.tensor([[last]]), c3.shallow).h
    v_part = verify(km, Draft(list(d_self.tokens), h0, None, [1.0] * 4, last_token=last), c3)
    torch.testing.assert_close(v_part.logits, v_self.logits)


class Never:
    name = "never"

    def decide(self, confs, source="self"):
        return False, False

    def probe(self, source="self"):
        return True  # pay for every candidate, then decline it

    def observe(self, block):
        pass

    def observe_candidate(self, conf, accepted, source):
        pass


@pytest.mark.parametrize("drafter", [SelfDrafter(4, Never()), NGramDrafter(4, policy=Never()),
                                     DrafterChain([NGramDrafter(4, policy=Never()), SelfDrafter(4, Never())])])
def test_zero_draft_blocks_are_greedy_steps(tiny_llama, drafter):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids = repetitive_prompt()
    blocks = []
    res = kangaroo_generate(km, ids, 20, set(), drafter=drafter, on_block=lambda b: blocks.append(b.drafted))
    assert res.tokens == greedy_decode(tiny_llama, ids, 20, set()).tokens
    assert blocks == [0] * 20 and res.accept_lengths == [1] * 20


def test_goodput_probes_less_after_declines_and_skipped_blocks_stay_greedy(tiny_llama):
    pol = GoodputPolicy(STEEP, Calibrator(prior_weight=1e9))  # nothing pays on a steep curve
    probes = [pol.probe() and not pol.decide([0.9])[0] for _ in range(400)]
    gaps = [i for i, p in enumerate(probes) if p]
    assert gaps[:6] == [0, 1, 3, 5, 8, 11]  # every block at first; after 2 declines every 2nd, then 3rd, ...
    assert max(b - a for a, b in zip(gaps, gaps[1:])) == pol.max_skip  # later every max_skip-th block
    assert sum(probes) < 50  # of 400 blocks
    pol.decide([1.0, 1.0], "ngram")
    sure = GoodputPolicy(FLAT, Calibrator(prior_weight=1e9))
    assert all(sure.probe() and sure.decide([0.9])[0] for _ in range(50))  # kept drafts: a probe every block
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    drafter = SelfDrafter(4, GoodputPolicy(STEEP, Calibrator(prior_weight=1e9)))
    calls = []
    head = km.drafter_logits_from_hk
    km.drafter_logits_from_hk = lambda hk: (calls.append(1), head(hk))[1]
    ids = repetitive_prompt()
    res = kangaroo_generate(km, ids, 40, set(), drafter=drafter)
    assert res.tokens == greedy_decode(tiny_llama, ids, 40, set()).tokens and res.accept_lengths == [1] * 40
    assert 5 <= len(calls) < 20  # the head ran only on the probed blocks


def test_kept_drafts_the_verifier_rejects_also_back_off_probes():
    from types import SimpleNamespace

    pol = GoodputPolicy(FLAT, Calibrator(prior_weight=1e9))  # keeps a 0.9 candidate: it looks worth it
    rejected = SimpleNamespace(draft=SimpleNamespace(source="self", confidences=[0.9]), drafted=1, accepted=0,
                               judged_declined=None)
    probes = []
    for _ in range(100):
        probes.append(pol.probe())
        if probes[-1]:
            assert pol.decide([0.9]) == (True, True)
            pol.observe(rejected)
    assert sum(probes) < 30 and not all(probes[-10:])
    pol.observe(SimpleNamespace(draft=rejected.draft, drafted=1, accepted=1, judged_declined=None))
    assert pol.declines == 0  # one accepted first draft: probe every block again


def test_expected_committed_and_goodput_decisions():
    assert expected_committed([]) == 1.0
    assert expected_committed([0.5, 0.5]) == pytest.approx(1.75)
    sure = GoodputPolicy(FLAT, Calibrator(prior_weight=1e9))  # trust the raw confidence
    assert sure.decide([0.9]) == (True, True)         # flat verify cost: a likely token pays
    assert sure.decide([0.01])[0] is False           # its extra shallow pass + head does not pay at p=0.01
    steep = GoodputPolicy(STEEP, Calibrator(prior_weight=1e9))
    assert steep.decide([0.9])[0] is False            # verifying 2 costs ~2x: p=0.9 cannot pay for it
    assert steep.decide([1.0])[0] is False            # not even a sure token (the extra draft pass costs)
    # n-gram tokens cost no drafter pass: on a flat curve a certain match always pays
    assert sure.decide([1.0, 1.0], "ngram") == (True, True)



def test_goodput_weighs_drafts_against_a_shared_batch_pass():
    # a block format's verify pass: memory-bound for one row (10 ms), then ~2.5 ms for each further row
    cost = CostCurve([0.5] * 7, [10.0 + 2.5 * n for n in range(7)], 0.7)
    assert cost.deep_at(7) == 25.0 and cost.deep_at(12) == pytest.approx(37.5)  # past the range: its last step
    policy = GoodputPolicy(cost, Calibrator(prior_weight=1e9))
    assert policy.decide([0.5], "ngram")[0] is True   # alone: half a token for a quarter of a step pays
    cost.batch_rows = 3                               # three other requests' rows share the pass
    assert policy.decide([0.5], "ngram")[0] is False  # 4.5 tokens / 20.5 ms < 4 / 18 ms: it no longer pays
    assert policy.decide([0.95], "ngram")[0] is True  # a near-certain token still does
    cost.batch_rows = 0
    assert policy.decide([0.5], "ngram")[0] is True

def test_calibrator_learns_observed_acceptance():
    cal = Calibrator(prior_weight=4)
    assert cal.p(0.95) == pytest.approx(0.95)
    for _ in range(400):
        cal.update(0.95, False)
    assert cal.p(0.95) < 0.02 and cal.p(0.95, "ngram") == pytest.approx(0.95)  # per source


def test_goodput_learns_to_stop_drafting_a_bad_drafter(tiny_llama):
    """The tiny random model's drafter is rarely right: with an honest calibrator the goodput policy drafts
    fewer tokens later in the run than at its start, and the output stays greedy."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    cost = CostCurve([1.0] * 8, [5.0 + n for n in range(8)], 0.5)
    drafter = SelfDrafter(4, GoodputPolicy(cost, Calibrator(prior_weight=2)))
    drafted = []
    ids = torch.randint(3, 97, (1, 7), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        res = kangaroo_generate(km, ids, 40, set(), drafter=drafter, on_block=lambda b: drafted.append(b))
        assert res.tokens == greedy_decode(tiny_llama, ids, 40, set()).tokens
    rate = lambda bs: sum(b.accepted for b in bs) / max(1, sum(b.drafted for b in bs))  # noqa: E731
    first, last = drafted[:20], drafted[-20:]
    assert sum(b.drafted for b in last) <= sum(b.drafted for b in first)
    assert rate(last) >= rate(first) or sum(b.drafted for b in last) == 0


def test_measured_cost_curve_has_the_right_shape(tiny_llama, tmp_path):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    c = measure_cost_curve(km, 4, reps=2)
    assert len(c.shallow_ms) == len(c.deep_ms) == 4 and c.head_ms > 0 and min(c.deep_ms) > 0
    c.to_json(tmp_path / "cost.json")
    assert CostCurve.from_json(tmp_path / "cost.json") == c
    assert c.block_ms(9) > 0  # past the measured range: extended flat


def test_real_model_drafters_lossless(real_lm, real_tokenizer):
    from kangaroo.chat import chat_prompt_ids
    from kangaroo.greedy import eos_ids_of

    km = KangarooModel(model_id="smollm2-135m", base_model=real_lm, exit_layer=2)
    eos = eos_ids_of(real_tokenizer, real_lm.config)
    cost = measure_cost_curve(km, 5, reps=1)
    sources = set()
    for text in ("Repeat exactly: the cat sat on the mat, the cat sat on the mat.",
                 "Write a Python function that returns the square of x."):
        ids = chat_prompt_ids(real_tokenizer, [{"role": "user", "content": text}], "smollm2-135m")
        ref = greedy_decode(real_lm, ids, 20, eos).tokens
        for kind, c in (("self", cost), ("ngram", cost), ("hybrid", cost), ("hybrid", FLAT),
                        ("ngram,memory,self", FLAT)):
            drafter = make_drafter(kind, 4, lambda: make_policy("goodput", 0.6, c))
            res = kangaroo_generate(km, ids, 20, eos, drafter=drafter,
                                    on_block=lambda b: sources.add(b.draft.source) if b.drafted else None)
            assert res.tokens == ref, kind
    assert "ngram" in sources  # the copy prompt gave prompt lookup something to draft (on a flat cost curve)


def test_hybrid_keeps_calibrating_ngram_matches_it_declines(tiny_llama):
    """A pessimistic n-gram calibrator makes the hybrid decline every match; the verifier's v_0 still judges each
    declined match, so the n-gram acceptance estimate keeps learning (and can recover)."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    cost = CostCurve([1.0] * 8, [5.0, 9.5] + [9.5 + n for n in range(6)], 0.5)  # an n-gram token needs p > 0.75
    cal = Calibrator(prior_weight=1)
    for conf in (0.5, 0.75, 0.875):  # every match length a 1..3-gram match's first token can have
        for _ in range(40):
            cal.update(conf, False, "ngram")
    hybrid = DrafterChain([NGramDrafter(4, policy=GoodputPolicy(cost, cal)), SelfDrafter(4, ThresholdStop(0.0))])
    sources = []
    ids = repetitive_prompt()
    res = kangaroo_generate(km, ids, 40, set(), drafter=hybrid, on_block=lambda b: sources.append(b.draft.source))
    assert res.tokens == greedy_decode(tiny_llama, ids, 40, set()).tokens
    assert sources and set(sources) == {"self"}  # every match declined
    assert sum(n for (src, _), n in cal.tried.items() if src == "ngram") > 120  # ... and judged anyway
    assert hybrid.by_source["ngram"].calls == len(sources) and hybrid.by_source["ngram"].blocks == 0


def test_drafters_and_speculative_import_without_a_cycle():
    """The drafter seam needs only the block records and the self-draft loop, never the decode loop."""
    import subprocess
    import sys

    code = ("import sys, kangaroo.drafters; assert 'kangaroo.speculative' not in sys.modules; "
            "import kangaroo.speculative as s; from kangaroo.blocks import Block; assert s.Block is Block")
    from pathlib import Path

    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_calibrator_decay_follows_a_drafter_that_improves():
    """A drafter learning online: its early rejections must not hold its acceptance estimate down for ever."""
    fading, forever = Calibrator(prior_weight=1.0, decay=0.98), Calibrator(prior_weight=1.0)
    for cal in (fading, forever):
        for accepted in [False] * 300 + [True] * 100:
            cal.update(0.55, accepted)
    assert fading.p(0.55) > 0.8 and forever.p(0.55) < 0.3
