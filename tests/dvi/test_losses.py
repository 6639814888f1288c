import math

import pytest
import torch
import torch.nn.functional as F

from dvi import losses as L


def _ref_kl(log_p_in, log_target, tau):
    return F.kl_div(log_p_in, log_target, log_target=True, reduction="batchmean") * tau ** 2


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_full_kls_match_kl_div_both_directions(tau):
    torch.manual_seed(0)
    d, z = torch.randn(6, 40) * 3, torch.randn(6, 40) * 3
    ld, lz = F.log_softmax(d / tau, -1), F.log_softmax(z / tau, -1)
    torch.testing.assert_close(L.kd_forward_kl_full(d, z, tau), _ref_kl(ld, lz, tau))
    torch.testing.assert_close(L.kd_reverse_kl_full(d, z, tau), _ref_kl(lz, ld, tau))
    assert not torch.allclose(L.kd_forward_kl_full(d, z, tau), L.kd_reverse_kl_full(d, z, tau))


def test_topk_kls_hand_computed():
    # verifier top-3 probs (1/2, 1/4, 1/4) (shifted logits: softmax is shift-invariant); drafter uniform on them.
    z_val = torch.log(torch.tensor([[2.0, 1.0, 1.0]])) + 5.0
    g = torch.zeros(1, 3)
    fwd = math.log(3) - 1.5 * math.log(2)           # KL(p||u) = ln 3 - H(p), H(p) = 1.5 ln 2
    rev = math.log(32 / 27) / 3                      # KL(u||p) = 1/3 [ln(2/3) + 2 ln(4/3)]
    assert L.kd_forward_kl_topk(g, z_val, 1.0).item() == pytest.approx(fwd, rel=1e-5)
    assert L.kd_reverse_kl_topk(g, z_val, 1.0).item() == pytest.approx(rev, rel=1e-5)
    # tau = 2: p_tau is proportional to sqrt(p); times tau^2 = 4
    p2 = torch.tensor([2.0, 1.0, 1.0]).sqrt()
    p2 = p2 / p2.sum()
    fwd2 = 4 * float((p2 * torch.log(p2 * 3)).sum())
    assert L.kd_forward_kl_topk(g, z_val, 2.0).item() == pytest.approx(fwd2, rel=1e-5)
    # batch mean: a second row with identical distributions adds 0 and halves the mean
    zz, gg = torch.cat([z_val, z_val]), torch.cat([g, z_val])
    assert L.kd_forward_kl_topk(gg, zz, 1.0).item() == pytest.approx(fwd / 2, rel=1e-5)


def test_topk_is_renormalised_over_k_not_full_kl():
    torch.manual_seed(0)
    d, z = torch.randn(3, 30), torch.randn(3, 30)
    val, idx = torch.topk(z, 4)
    approx = L.kd_forward_kl_topk(d.gather(1, idx), val, 1.0)
    torch.testing.assert_close(approx, _ref_kl(F.log_softmax(d.gather(1, idx), -1), F.log_softmax(val, -1), 1.0))
    assert not torch.allclose(approx, L.kd_forward_kl_full(d, z, 1.0))


@pytest.mark.parametrize("fn", [L.kd_forward_kl_full, L.kd_reverse_kl_full, L.kd_forward_kl_topk,
                                L.kd_reverse_kl_topk])
def test_kl_nonnegative_and_zero_when_equal(fn):
    torch.manual_seed(1)
    for _ in range(5):
        d, z = torch.randn(4, 12) * 4, torch.randn(4, 12) * 4
        assert fn(d, z, 1.5).item() >= 0
    z = torch.randn(4, 12)
    assert fn(z.clone(), z, 1.5).item() == pytest.approx(0.0, abs=1e-6)
    assert fn(z + 3.0, z, 1.5).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant


def test_fp16_inputs_computed_in_float32():
    d, z = torch.randn(2, 10).half(), torch.randn(2, 10).half()
    out = L.kd_forward_kl_full(d, z, 1.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, L.kd_forward_kl_full(d.float(), z.float(), 1.0))
    assert L.entropy(d).dtype == torch.float32


def test_forward_kl_handles_masked_verifier_logits():
    z = torch.tensor([[0.0, float("-inf"), 1.0]])
    d = torch.zeros(1, 3, requires_grad=True)
    loss = L.kd_forward_kl_full(d, z, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(d.grad).all()


def test_masks_select_exact_samples():
    reward = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    first = torch.tensor([False, False, True, False, False, True])
    assert L.ce_mask(reward, first).tolist() == [True, True, False, False, True, False]
    assert L.pg_mask(reward, first).tolist() == [True, True, True, False, True, True]


def test_ce_over_accepted_only():
    torch.manual_seed(0)
    logits, tokens = torch.randn(4, 9), torch.tensor([1, 2, 3, 4])
    reward = torch.tensor([1.0, 0.0, 1.0, 0.0])
    lp = F.log_softmax(logits, -1)
    expected = -(lp[0, 1] + lp[2, 3]) / 2
    torch.testing.assert_close(L.ce_accepted(logits, tokens, reward), expected)
    changed = logits.clone()
    changed[1] = torch.randn(9) * 5
    changed[3] = torch.randn(9) * 5
    torch.testing.assert_close(L.ce_accepted(changed, tokens, reward), expected)
    changed[0] += torch.arange(9.0)
    assert not torch.allclose(L.ce_accepted(changed, tokens, reward), expected)


def test_ce_zero_with_graph_when_none_accepted():
    logits = torch.randn(3, 5, requires_grad=True)
    out = L.ce_accepted(logits, torch.tensor([0, 1, 2]), torch.zeros(3))
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 5))


def _pg_grad(reward, first, baseline, token=2):
    logits = torch.zeros(1, 6, requires_grad=True)
    loss = L.policy_gradient(logits, torch.tensor([token]), torch.tensor([reward]), torch.tensor([first]), baseline)
    loss.backward()
    return loss, logits.grad[0]


def test_pg_sign():
    # gradient descent moves logits by -grad: accepted (adv > 0) -> token logit up; rejected (adv < 0) -> down
    loss, g = _pg_grad(1.0, False, 0.3)
    assert torch.isfinite(loss) and g[2] < 0 and (g[[0, 1, 3, 4, 5]] > 0).all()
    loss, g = _pg_grad(0.0, True, 0.3)
    assert torch.isfinite(loss) and g[2] > 0
    # a reward-0 sample that is not the first reject is out of the PG mask
    loss, g = _pg_grad(0.0, False, 0.3)
    assert loss.item() == 0.0 and torch.equal(g, torch.zeros(6))


def test_pg_value():
    logits = torch.randn(3, 7)
    tokens, reward = torch.tensor([0, 5, 6]), torch.tensor([1.0, 0.0, 0.0])
    first = torch.tensor([False, True, False])
    lp = F.log_softmax(logits, -1)
    expected = -((1 - 0.25) * lp[0, 0] + (0 - 0.25) * lp[1, 5]) / 2
    torch.testing.assert_close(L.policy_gradient(logits, tokens, reward, first, 0.25), expected)


def test_entropy():
    assert L.entropy(torch.zeros(2, 50)).item() == pytest.approx(math.log(50), rel=1e-6)
    peaked = torch.full((1, 50), -30.0)
    peaked[0, 3] = 30.0
    assert L.entropy(peaked).item() < 1e-6


def test_kd_top1_is_ce_on_the_verifier_token():
    logits, v = torch.randn(4, 9), torch.tensor([0, 3, 8, 3])
    torch.testing.assert_close(L.kd_top1(logits, v), F.cross_entropy(logits, v))
    empty = torch.zeros(0, 9, requires_grad=True)
    assert L.kd_top1(empty, torch.zeros(0, dtype=torch.long)).item() == 0.0


def test_expected_acceptance_value_and_mask():
    logits = torch.randn(4, 7)
    v = torch.tensor([1, 2, 3, 4])
    reward = torch.tensor([1.0, 0.0, 0.0, 1.0])
    first = torch.tensor([False, True, False, False])
    kd_only = torch.tensor([False, False, False, True])
    q = F.softmax(logits, -1)
    expected = -(q[0, 1] + q[1, 2]) / 2  # row 2: reward 0, not the first reject; row 3: KD-only
    torch.testing.assert_close(L.expected_acceptance(logits, v, reward, first, kd_only), expected)


def test_a_rejection_moves_mass_to_the_verifier_token_not_to_the_drafters_other_guesses():
    """Why REINFORCE on the drafter's own argmax sharpens it: a rejected draft y gets -adv * grad log q(y), which
    raises every other logit in proportion to its probability (the runner-up most). The expected-acceptance form
    raises only the verifier's token v and lowers all the others."""
    logits = torch.tensor([[3.0, 2.0, 0.0, -1.0, -1.0]], requires_grad=True)  # drafted y = 0, verifier v = 3
    L.policy_gradient(logits, torch.tensor([0]), torch.tensor([0.0]), torch.tensor([True]), 0.5).backward()
    g = logits.grad[0]
    assert g[0] > 0 and (g[1:] < 0).all() and g[1] < g[3]  # descent: y down, all others up, the runner-up most
    logits.grad = None
    L.expected_acceptance(logits, torch.tensor([3]), torch.tensor([0.0]), torch.tensor([True])).backward()
    g = logits.grad[0]
    assert g[3] < 0 and (g[[0, 1, 2, 4]] > 0).all()  # descent: only v up
