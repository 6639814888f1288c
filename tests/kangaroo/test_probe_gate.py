"""The zero-cost probe decision (kangaroo/probe_gate.py): it declines probes that cannot pay without running the head,
counts them, keeps exploring, learns which free signals predict a paying probe, and decoding stays greedy."""
import math
from types import SimpleNamespace

import pytest
import torch

from kangaroo.draft_policy import Calibrator, GoodputPolicy, make_policy
from kangaroo.drafters import DrafterChain, NGramDrafter, SelfDrafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.probe_gate import ProbeGate, committed_prob, gate_counters
from kangaroo.speculative import kangaroo_generate
from kangaroo.verify_cost import CostCurve

CHEAP = CostCurve(shallow_ms=[1.0, 1.5, 2.0], deep_ms=[30.0, 31.0, 33.0], head_ms=0.3)
DEAR = CostCurve(shallow_ms=[1.0, 1.5, 2.0], deep_ms=[30.0, 31.0, 33.0], head_ms=2.25)  # break-even q 0.21


def block_with_row(p_top: float, accepted: int = 0, V: int = 50):
    """A block whose committed row gives its top token probability ``p_top``."""
    rest = (1 - p_top) / (V - 1)
    row = torch.full((V,), math.log(rest))
    row[3] = math.log(p_top)
    logits = torch.zeros(accepted + 1, V)
    logits[accepted] = row
    return SimpleNamespace(verification=SimpleNamespace(logits=logits), accepted=accepted)


def test_break_even_comes_from_the_cost_curve():
    """q at which a sent first draft's block, 1 + q tokens for 2 x (shallow + head) + deep(2), pays as a plain block,
    1 token for shallow + deep(1); with b rows of other sequences, b + 1 + q tokens against b + 1."""
    assert ProbeGate(CHEAP).threshold() == pytest.approx((2 * 1.3 + 31.0) / 31.0 - 1)
    assert ProbeGate(DEAR).threshold() == pytest.approx((2 * 3.25 + 31.0) / 31.0 - 1)
    batched = CostCurve(shallow_ms=[1.0, 1.5, 2.0], deep_ms=[30.0, 31.0, 33.0], head_ms=0.3, batch_rows=2)
    assert ProbeGate(batched).threshold() == pytest.approx(3 * ((2 * 1.3 + 35.0) / (1.0 + 33.0) - 1))


def test_a_learning_drafter_probes_whenever_an_agreeing_probe_pays_its_head():
    """Online every probe is also a training label: the head's cost over what an agreeing probe saves."""
    assert ProbeGate(DEAR, learning=True).threshold() == pytest.approx(2.25 / (30.0 - 1.0))
    gate = ProbeGate(DEAR, learning=True)
    for _ in range(50):  # agreement 0.15: below the deployed break-even (0.21), above the learning one (0.08)
        gate.note(block_with_row(0.5))
        assert gate.should_probe()
        gate.learn(gate.probes % 7 == 0)
    assert gate.declined_free == 0
    assert make_policy("goodput", cost=DEAR, gate=True, learning=True).gate.learning


def test_committed_probability_is_the_softmax_top():
    row = torch.randn(1000) * 4
    assert committed_prob(row) == pytest.approx(float(torch.softmax(row, -1).max()), rel=1e-5)
    assert committed_prob(row.double()) == pytest.approx(float(torch.softmax(row, -1).max()), rel=1e-5)


def test_probes_that_never_pay_are_declined_for_free_with_exploration():
    gate = ProbeGate(DEAR, explore_every=10)
    asked = []
    for _ in range(300):
        gate.note(block_with_row(0.5))
        asked.append(gate.should_probe())
        if asked[-1]:
            gate.learn(False)
    assert all(asked[:3])                                   # the prior (0.3 agreement) first pays for probes
    assert sum(asked[-100:]) == 10                          # then only the exploration: every 10th block
    assert gate.declined_free == 300 - sum(asked) and gate.probes == sum(asked)
    assert gate.explored > 0 and gate.agreed == 0


def test_paying_probes_run_every_block():
    gate = ProbeGate(DEAR)
    for _ in range(100):
        gate.note(block_with_row(0.5))
        assert gate.should_probe()
        gate.learn(True)
    assert gate.declined_free == 0 and gate.recent > 0.9


def test_the_gate_learns_that_a_confident_verifier_predicts_agreement():
    """Synthetic stream: the drafter agrees only after a token the verifier was sure of; the gate learns the weight and
    then probes after confident tokens and declines after unsure ones."""
    gate = ProbeGate(DEAR, explore_every=1)  # explore every block: learn from all of them
    for i in range(3000):
        p = 0.95 if i % 2 else 0.2
        gate.note(block_with_row(p))
        gate.should_probe()
        gate.learn(p > 0.5)
    assert gate.w[1] > 0.5  # logit p_verifier
    gate.explore_every = 10 ** 9
    gate.note(block_with_row(0.95))
    assert gate.should_probe()
    gate.learn(True)
    gate.note(block_with_row(0.2))
    assert not gate.should_probe()


@pytest.mark.parametrize("hybrid", [False, True])
def test_gated_goodput_decodes_greedy_and_counts_declines(tiny_llama, hybrid):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    selfd = SelfDrafter(4, make_policy("goodput", cost=DEAR, gate=True))
    drafter = DrafterChain([NGramDrafter(4), selfd]) if hybrid else selfd
    blocks = []
    for seed in (1, 2, 3):
        ids = torch.randint(3, 97, (1, 8), generator=torch.Generator().manual_seed(seed))
        drafter.begin(ids[0].tolist())
        res = kangaroo_generate(km, ids, 40, set(), drafter=drafter, on_block=blocks.append)
        assert res.tokens == greedy_decode(tiny_llama, ids, 40, set()).tokens
    c = gate_counters(drafter)["self"]
    self_blocks = sum(b.draft.source == "self" for b in blocks)
    assert c["probes"] + c["declined_free"] == self_blocks and c["declined_free"] > 0
    assert sum(b.draft.source == "self" and (b.drafted or b.draft.declined_token is not None)
               for b in blocks) == c["probes"]  # the head ran exactly on the probed blocks


def test_without_a_gate_the_policy_keeps_its_backoff():
    pol = GoodputPolicy(DEAR, Calibrator())
    assert pol.gate is None and gate_counters(SelfDrafter(4, pol)) == {}
    pol.note(block_with_row(0.5))  # harmless without a gate
    assert make_policy("goodput", cost=DEAR, gate=True).gate is not None
