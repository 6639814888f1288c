"""The self-drafting cost model: hand-computed speeds, thresholds against brute force, the agreement a target needs."""
import json

import pytest
import torch

from common.errors import UserError
from scripts.experiments.ceiling.policies import (StepCosts, best_threshold, foresight, lookup_agreement,
                                                  needed_agreement, policy_table, prefill_steps, source_table, speed,
                                                  speedup_with_prefill)

C = StepCosts(draft=0.1, row=0.2)


def test_speed_counts_each_position_by_what_was_paid():
    correct = torch.tensor([True, False, True, False])
    drafted = torch.tensor([True, True, True, False])
    verified = torch.tensor([True, True, False, False])
    # agreed and verified 0.3; verified, disagreed 1.3; drafted, declined 1.1; not drafted 1
    assert speed(correct, drafted, verified, C) == pytest.approx(4 / (0.3 + 1.3 + 1.1 + 1.0))
    nothing = torch.zeros(4, dtype=torch.bool)
    assert speed(correct, nothing, nothing, C) == 1.0


def brute(score, correct, c, after_draft):
    best = 1 / (1 + c.draft) if after_draft else 1.0
    for s in sorted(set(score.tolist())):
        take = score >= s
        drafted = torch.ones_like(take) if after_draft else take
        best = max(best, speed(correct, drafted, take, c))
    return best


@pytest.mark.parametrize("after_draft", [False, True])
def test_best_threshold_equals_brute_force_with_ties(after_draft):
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 6, (200,), generator=g).float() / 5  # many ties
    correct = torch.rand(200, generator=g) < 0.2 + 0.7 * score
    got, s = best_threshold(score, correct, C, after_draft)
    assert got == pytest.approx(brute(score, correct, C, after_draft), rel=1e-9)
    take = score >= s
    assert speed(correct, torch.ones_like(take) if after_draft else take, take, C) == pytest.approx(got, rel=1e-9)


def test_best_threshold_declines_when_no_draft_pays():
    correct = torch.zeros(50, dtype=torch.bool)
    assert best_threshold(torch.rand(50), correct, C, after_draft=False) == (1.0, float("inf"))
    assert best_threshold(torch.rand(50), correct, C, after_draft=True)[0] == pytest.approx(1 / 1.1)


@pytest.mark.parametrize("after_draft", [False, True])
def test_needed_agreement_reaches_the_target_with_a_perfect_decision(after_draft):
    p = needed_agreement(1.25, C, after_draft)
    n = 100_000
    correct = torch.arange(n) < round(p * n)
    drafted = torch.ones(n, dtype=torch.bool) if after_draft else correct
    assert speed(correct, drafted, correct, C) == pytest.approx(1.25, rel=1e-4)


def test_policy_table_foresight_bounds_every_policy():
    g = torch.Generator().manual_seed(1)
    conf = torch.rand(500, generator=g)
    correct = torch.rand(500, generator=g) < conf
    correct2 = correct | (torch.rand(500, generator=g) < 0.2)
    t = policy_table(conf, correct, correct2, torch.rand(500, generator=g), C)
    assert t["agreement top-1"] <= t["agreement top-2"]
    speeds = [v for k, v in t.items() if not k.startswith(("agreement", "top-2"))]
    assert max(speeds) == t["foresight: only agreeing drafts"]
    assert t["drafter confidence decides the row"] >= t["always draft one"]


def test_costs_from_profile_and_bad_files(tmp_path):
    # a row: the least-squares slope of deep(n) (2.0 ms here), not deep(2) - deep(1) (2.5)
    costs = {"ar_ms": 10.0, "deep_ms": {"1": 9.0, "2": 11.5, "3": 13.0},
             "draft": [{"token_ms": 2.0}, {"token_ms": 1.5}]}
    (tmp_path / "ok.json").write_text(json.dumps({"costs": costs}))
    assert StepCosts.from_file(tmp_path / "ok.json") == StepCosts(draft=0.15, row=0.2)
    (tmp_path / "bad.json").write_text("{}")
    for path in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(UserError, match="not a block_costs.json.*scripts.profile block"):
            StepCosts.from_file(path)
    with pytest.raises(ValueError, match=">= 0"):
        StepCosts(draft=-0.1, row=0.2)


def test_lookup_agreement_by_hand():
    got = lookup_agreement([([7, 8, 9], [7, 8, 5]), ([1], [7, 8, 5])])
    # first output: t=0 after 7 8 9 (9 not seen before): no draft; t=1 after ..9 7: '7' went on with 8, the greedy
    # token (a 1-token match: confidence 0.5); t=2 after ..7 8: '7 8' went on with 9 (0.75), the greedy token is 5.
    # The second prompt, 1, has no match
    ngram_ok, ngram_conf = got["ngram"]
    assert ngram_ok.tolist() == [False, True, False, False, False, False]
    assert ngram_conf.tolist() == [-1, 0.5, 0.75, -1, -1, -1]
    # memory: empty for the first output; for the second it holds 7 8 5: after '1' nothing, after '7' -> 8, '7 8' -> 5
    mem_ok, mem_conf = got["memory"]
    assert mem_ok.tolist() == [False, False, False, False, True, True]
    assert (mem_conf[:4] == -1).all() and (mem_conf[4:] > 0).all()


def test_foresight_takes_the_cheapest_agreeing_drafter():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert foresight([(a, 0.2), (b, 0.3)]) == pytest.approx(4 / (0.2 + 0.2 + 0.3 + 1))


def test_source_table_prices_each_drafter():
    c = StepCosts(draft=0.1, row=0.2, lookup_row=0.25)
    self_ok = torch.tensor([True, True, False, False])
    none = torch.zeros(4, dtype=torch.bool)
    lookups = {"ngram": (torch.tensor([True, False, True, False]), torch.tensor([0.9, 0.5, 0.9, -1.0])),
               "memory": (none, torch.full((4,), -1.0))}
    t = source_table(self_ok, lookups, c)
    assert t["agreement any"] == 0.75 and t["agreement self"] == 0.5 and t["agreement memory"] == 0
    # the self-drafter pays for its draft and a deep row (0.1 + 0.2), a lookup for a whole row (0.25)
    assert t["foresight: self"] == pytest.approx(4 / (0.3 + 0.3 + 1 + 1))
    assert t["foresight: self + ngram + memory"] == pytest.approx(4 / (0.25 + 0.3 + 0.25 + 1))
    # the n-gram's confidence: drafting where it is 0.9 takes both agreeing positions and nothing else
    assert t["lookups: their confidence decides"] == pytest.approx(4 / (0.25 + 1 + 0.25 + 1))
    with_prefill = source_table(self_ok, lookups, c, ([3, 1], torch.tensor([1.0, 1.0])))
    assert with_prefill["foresight: self, prefill included"] == pytest.approx(
        (3 / (1 + 0.3 + 0.3 + 1) + 1 / (1 + 1)) / (3 / 4 + 1 / 2))
    assert StepCosts(0.1, 0.2).lookup_row == 0.2 and StepCosts(0.1, 0.2).with_shallow_rows(30, 2).lookup_row == \
        pytest.approx(0.2 * 30 / 28)


def test_prefill_steps_recovers_a_linear_run():
    prompt, new = [40, 300, 80, 900], [64, 64, 30, 50]
    wall = [0.01 * n + 0.003 * L + 0.02 for n, L in zip(new, prompt)]
    got = prefill_steps(prompt, new, wall)
    assert got.tolist() == pytest.approx([(0.003 * L + 0.02) / 0.01 for L in prompt], rel=1e-6)


def test_speedup_with_prefill_is_speed_py_with_prefill_on_both_sides():
    # two questions of 2 and 1 positions, prefill 2 and 10 steps; the method spends 1.0 and 0.5
    cost = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    got = speedup_with_prefill(cost, [2, 1], torch.tensor([2.0, 10.0], dtype=torch.float64))
    assert got == pytest.approx((2 / 3 + 1 / 10.5) / (2 / 4 + 1 / 11))
    assert speedup_with_prefill(torch.ones(3, dtype=torch.float64), [2, 1], torch.tensor([2.0, 10.0])) == 1.0
