"""The GPU projection's pure parts by hand: weight shares, runs of agreement, the block walk."""
import pytest
import torch

from scripts.experiments.ceiling import projection
from scripts.experiments.ceiling.projection import GpuCosts, block_walk, chain_runs, project, weight_share_costs

TOY = {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 10, "num_attention_heads": 2,
       "num_key_value_heads": 1, "vocab_size": 100}


def test_weight_shares_by_hand():
    # a layer: q, o 4x4 each, k, v 4x2 each, gate/up/down 4x8 each = 32 + 16 + 96 = 144; a step: 10 x 144 + 400
    c = weight_share_costs(TOY, exit_layer=2, drafter_vocab=None)
    assert projection.layer_params(TOY) == 144
    assert c.draft["self"] == pytest.approx((2 * 144 + 400) / 1840)
    assert c.draft["feature"] == pytest.approx((144 + 32 + 400) / 1840)
    assert weight_share_costs(TOY, 2, 10).draft["self"] == pytest.approx((2 * 144 + 40) / 1840)


def test_vicuna_shares_are_a_few_percent_of_a_step():
    c = weight_share_costs(projection.VICUNA_7B, 2, 8192)
    assert 0.05 < c.draft["self"] < 0.08 and 0.03 < c.draft["feature"] < 0.05


def test_runs_restart_at_each_sequence():
    agree = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    seq = torch.tensor([0, 0, 0, 0, 1, 1])
    assert chain_runs(agree, seq) == [[2, 1, 0, 1], [2, 1]]


def test_block_walk_by_hand():
    runs = [[2, 1, 0, 1]]   # positions 0..3
    free = GpuCosts({}, free_rows=8)
    # gamma 2: block at 0 accepts 2 (+1: 3 tokens, cost 1 + 2d), block at 3 accepts 1 but only 1 position is left
    assert block_walk(runs, 0.1, 2, free) == pytest.approx(4 / (2 * 1.2))
    # foresight: at 0 drafts 3 (2 accepted + the miss), at 3 drafts 2 (1 + 1)
    assert block_walk(runs, 0.1, None, free) == pytest.approx(4 / (1.3 + 1.2))
    # a row beyond the free ones costs
    assert block_walk(runs, 0.0, 2, GpuCosts({}, free_rows=2, row=0.5)) == pytest.approx(4 / 3)


def test_project_picks_the_best_gamma_and_never_beats_foresight():
    agree = torch.tensor([1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 0], dtype=torch.bool)
    r = project(agree, torch.zeros(12, dtype=torch.long), 0.05, GpuCosts({}))
    assert r["best"] == max(r["per_gamma"].values()) and r["foresight"] >= r["best"]
    assert r["top1"] == pytest.approx(8 / 12)
    nothing = project(torch.zeros(5, dtype=torch.bool), torch.zeros(5, dtype=torch.long), 0.05, GpuCosts({}))
    assert nothing["best"] < 1.0   # a drafter that never agrees only pays
