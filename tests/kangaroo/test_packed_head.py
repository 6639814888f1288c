"""The drafter head in int8 / bf16 (kangaroo/csrc/packed_head.cpp, kangaroo/packed_head.py): the kernel's logits equal a
reference of the same quantized math, every ISA path agrees, top-k and probabilities are the softmax's, the LoRA
delta is live (or merged when frozen), proposals stay close to the float32 head's, and decoding stays greedy."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.packed_head import (
    PackedHead,
    configure,
    packed_head,
    propose,
    quantize_rows,
    reference_int8_logits,
)
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")
AVX2 = 1


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("N,d", [(37, 40), (64, 64), (203, 576)])
def test_int8_logits_equal_the_reference_bit_for_bit_on_every_path(N, d):
    w, x = rand(N, d, seed=N), rand(3, d, seed=d, scale=3.0)
    ph = PackedHead(w, "int8")
    assert ph.q.shape == (N, -(-d // 64) * 64) and ph.q.dtype == torch.int8 and int(ph.q[:, d:].abs().sum()) == 0
    _, _, y = ph.top_k(x, 1)
    assert torch.equal(y, reference_int8_logits(x, ph.q, ph.scale))  # the integer dot is exact
    assert torch.equal(ph.top_k(x, 1, isa=AVX2)[2], y)               # so AVX2 and VNNI give the same bits
    torch.testing.assert_close(y, x @ w.T, rtol=0.05, atol=0.05 * float((x @ w.T).abs().max()))


def test_quantized_rows_round_trip_within_half_a_step():
    w = rand(50, 70, seed=1)
    q, scale, rowsum = quantize_rows(w)
    back = q[:, :70].float() * scale[:, None]
    assert torch.all((back - w).abs() <= scale[:, None] / 2 + 1e-6)
    assert torch.equal(rowsum, q.to(torch.int32).sum(1)) and int(q.abs().max()) <= 127


@pytest.mark.parametrize("N,d", [(37, 40), (203, 576)])
def test_bf16_logits_match_bf16_math_on_every_path(N, d):
    w, x = rand(N, d, seed=N), rand(2, d, seed=d)
    ph = PackedHead(w, "bf16")
    ref = x.bfloat16().double() @ w.bfloat16().double().T
    for isa in (0, AVX2):
        torch.testing.assert_close(ph.top_k(x, 1, isa=isa)[2].double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_top_k_and_probabilities_are_the_softmax_of_the_logits(precision):
    ph = PackedHead(rand(300, 64, seed=2), precision)
    idx, prob, y = ph.top_k(rand(2, 64, seed=3, scale=2.0), 5)
    p_ref, i_ref = torch.softmax(y.double(), -1).topk(5)
    assert torch.equal(idx, i_ref) and idx.shape == (2, 5) and prob.dtype == torch.float32
    torch.testing.assert_close(prob.double(), p_ref, rtol=1e-5, atol=1e-7)
    assert torch.all(prob[:, :-1] >= prob[:, 1:])
    row = rand(3, 1000, seed=4, scale=5.0)
    i2, p2 = cpu_engine.extension().softmax_top_k(row, 3)
    ref = torch.softmax(row, -1).topk(3)
    assert torch.equal(i2, ref.indices)
    torch.testing.assert_close(p2, ref.values, rtol=1e-5, atol=1e-7)


def test_the_build_says_which_head_paths_it_has():
    """AVX2 always; the AVX2 build (``KANGAROO_ENGINE_ISA=avx2``) no AVX-512 path, even on an AVX-512 CPU."""
    ext = cpu_engine.extension()
    paths = ext.packed_head_isa()
    assert paths & AVX2 and paths < 8
    if ext.isa == "avx2":
        assert paths == AVX2


def test_kernel_checks_shapes():
    ph = PackedHead(rand(20, 40), "int8")
    ext = cpu_engine.extension()
    with pytest.raises(RuntimeError, match="k must lie"):
        ph.top_k(rand(1, 40), 21)
    with pytest.raises(RuntimeError, match="padded"):
        ph.top_k(rand(1, 100), 1)  # another d than the packed rows
    with pytest.raises(RuntimeError, match="LoRA shapes"):
        ext.head_int8(rand(1, 40), ph.q, ph.scale, ph.rowsum, rand(4, 40), rand(19, 4), 1.0, 1, 0)


def lora_model(seed=0, r=4):
    lm = make_tiny_llama(seed=seed, dtype=torch.float32)
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    head = attach_drafter_head(km, r=r, alpha=float(r))
    torch.nn.init.normal_(head.proj.B, std=0.5)
    return lm, km, head


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_live_lora_delta_is_added_and_sees_in_place_updates(precision):
    _, km, head = lora_model()
    configure(km, precision, frozen=False)
    x = rand(1, 32, seed=5)
    ph = packed_head(km)
    delta = lambda: (head(x) - head.proj.base(x)).detach()
    y1, d1 = ph.top_k(x, 1)[2], delta()
    full = head(x).detach()
    assert ph.lora is not None and float((y1 - full).abs().max()) < 0.05 * float(full.abs().max())
    with torch.no_grad():
        head.proj.B.mul_(-2.0)  # the trainer publishes new weights in place
    assert packed_head(km) is ph  # live: no re-pack
    torch.testing.assert_close(ph.top_k(x, 1)[2] - y1, delta() - d1, rtol=1e-4, atol=1e-4)


def test_a_frozen_head_is_merged_and_packed_again_when_it_changes():
    _, km, head = lora_model()
    configure(km, "int8", frozen=True)
    x = rand(1, 32, seed=6)
    ph = packed_head(km)
    assert ph.lora is None and packed_head(km) is ph
    err = (ph.top_k(x, 1)[2] - head(x).detach()).abs().max() / head(x).detach().abs().max()
    assert err < 0.05
    with torch.no_grad():
        head.proj.B.zero_()
    assert packed_head(km) is not ph  # the merged rows are stale: re-packed
    attach_drafter_head(km, r=4, alpha=4.0)
    assert packed_head(km).key[1] is km.drafter_head  # a new head: packed anew


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_proposals_agree_with_the_float32_head(precision):
    """On hk of real decoding positions the quantized head proposes the float32 head's top-1 almost always."""
    _, km, _ = lora_model(seed=3)
    ids = torch.randint(3, 97, (1, 60), generator=torch.Generator().manual_seed(7))
    hks = km.forward_shallow(ids, km.new_caches(64).shallow).hk[0]
    configure(km, "float32")
    ref = [propose(km, h[None]).columns[0] for h in hks]
    configure(km, precision)
    got = [propose(km, h[None]) for h in hks]
    agree = sum(g.columns[0] == r for g, r in zip(got, ref)) / len(ref)
    assert agree >= 0.9, agree
    assert all(0 < g.probs[0] <= 1 for g in got)


@pytest.mark.parametrize("precision", ["int8", "bf16", "float32"])
@pytest.mark.parametrize("lora", [False, True])
def test_decoding_with_any_head_precision_equals_greedy(precision, lora):
    lm, km, _ = lora_model(seed=1)
    if not lora:
        km.drafter_head = None
    configure(km, precision)
    for seed in (1, 2):
        ids = torch.randint(3, 97, (1, 8), generator=torch.Generator().manual_seed(seed))
        res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0)
        assert res.tokens == greedy_decode(lm, ids, 30, set()).tokens


def test_the_plain_engine_setting_takes_the_float32_head():
    _, km, _ = lora_model()
    configure(km, "int8")
    x = rand(1, 32, seed=8)
    cpu_engine.set_enabled(False)
    try:
        got = propose(km, x)
    finally:
        cpu_engine.set_enabled(True)
    p = torch.softmax(km.drafter_logits_from_hk(x).detach(), -1)
    assert got.columns == [int(p.argmax())] and got.probs[0] == pytest.approx(float(p.max()))


def test_auto_takes_the_stored_rows_of_a_head_stored_in_blocks():
    """``auto``: int8 for a float32 head; float32 (the engine's exact stored rows, the faster) for a Q8_0 head."""
    from kangaroo.weight_formats import quantize

    _, km, head = lora_model()
    configure(km, "auto")
    assert km.head_precision == "int8" and packed_head(km) is not None
    cpu_engine.attach_stored(head.proj.base, quantize(head.proj.base.weight.detach(), "q8_0"))
    configure(km, "auto")
    assert km.head_precision == "float32" and packed_head(km) is None
    x = rand(1, 32, seed=9)
    p = torch.softmax(km.drafter_logits_from_hk(x).detach(), -1)
    assert propose(km, x).columns == [int(p.argmax())]
