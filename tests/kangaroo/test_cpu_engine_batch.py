"""Several sequences in one engine call (``run_layers_batch``): each output, and each cache, equals
``run_layers`` of that sequence alone, bit for bit; what the engine does not take runs alone."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.llama_forward import new_cache, run_layers, run_layers_batch
from tests.helpers import make_tiny_llama

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")


def _caches(lm, prefixes):
    body = lm.model
    caches = []
    for p in prefixes:
        c = new_cache(lm.config, len(body.layers), 64, torch.float32, "cpu")
        if p.shape[1]:
            run_layers(body.layers, body.embed_tokens(p), c, body.rotary_emb)
        caches.append(c)
    return caches


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_each_sequence_alone(threads):
    torch.set_num_threads(threads)
    lm = make_tiny_llama(seed=2, dtype=torch.float32)
    body = lm.model
    g = torch.Generator().manual_seed(0)
    prefixes = [torch.randint(0, 97, (1, n), generator=g) for n in (5, 0, 19, 11)]  # 19: prefilled by the plain path
    blocks = [torch.randint(0, 97, (1, n), generator=g) for n in (1, 3, 7, 30)]  # 30 rows: the plain path, alone
    alone, together = _caches(lm, prefixes), _caches(lm, prefixes)
    ref = [run_layers(body.layers, body.embed_tokens(b), c, body.rotary_emb) for b, c in zip(blocks, alone)]
    out = run_layers_batch(body.layers, [body.embed_tokens(b) for b in blocks], together, body.rotary_emb)
    torch.set_num_threads(1)
    for r, o, a, t in zip(ref, out, alone, together):
        assert torch.equal(r.view(torch.int32), o.view(torch.int32))
        assert a.length == t.length
        assert torch.equal(a.k[..., :a.length, :], t.k[..., :t.length, :])
        assert torch.equal(a.v[..., :a.length, :], t.v[..., :t.length, :])


def test_batch_rejects_mismatched_lists_and_overflow():
    lm = make_tiny_llama(seed=2, dtype=torch.float32)
    body = lm.model
    caches = _caches(lm, [torch.zeros(1, 0, dtype=torch.long)] * 2)
    h = body.embed_tokens(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="2 caches"):
        run_layers_batch(body.layers, [h], caches, body.rotary_emb)
    caches[1].length = 63
    with pytest.raises(RuntimeError, match="overflow"):
        run_layers_batch(body.layers, [h, h], caches, body.rotary_emb)


def test_shapes_are_checked_with_an_error_not_a_crash():
    lm = make_tiny_llama(seed=2, dtype=torch.float32)
    ext, layer = cpu_engine.extension(), lm.model.layers[0]
    norms = [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
    w = cpu_engine.weight_for(layer.mlp.down_proj.weight)  # [32, 64]: not a q/k/v matrix
    with pytest.raises(RuntimeError, match="weight shapes"):
        ext.Stack(norms, [w, w, w, w], 4, 2, 8, 1e-6, 8 ** -0.5)
    stack = cpu_engine.stack_for(lm.model.layers)
    h, cos = torch.zeros(2, 32), torch.zeros(2, 8)
    bad = torch.zeros(4, 1, 2, 16, 4)  # head_dim 4, not 8
    with pytest.raises(RuntimeError, match="bad cache"):
        stack.forward(h, bad, bad, 0, cos, cos)
    good = torch.zeros(4, 1, 2, 16, 8)
    with pytest.raises(RuntimeError, match="cos/sin"):
        stack.forward(h, good, good, 0, cos[:1], cos[:1])
    with pytest.raises(RuntimeError, match="h must be"):
        stack.forward(torch.zeros(2, 31), good, good, 0, cos, cos)
    with pytest.raises(RuntimeError, match="top1"):
        ext.top1(torch.zeros(2, 5, dtype=torch.float64), True)


def test_top1_gives_torchs_argmax_and_softmax_maximum():
    from kangaroo.llama_forward import argmax_rows, top1

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 49157, generator=g) * 4
    logits[1, [7, 3000, 49156]] = 50.0                    # a tie: the first index wins, as in torch
    logits[2] = float("-inf")
    logits[3, 11] = float("nan")                          # torch.argmax takes the first NaN
    logits[4, 49156] = 99.0                               # the maximum in the scalar tail
    assert argmax_rows(logits) == logits.argmax(-1).tolist() == top1(logits)[0]
    ok = [0, 1, 4, 5]
    torch.testing.assert_close(torch.tensor(top1(logits)[1], dtype=torch.float64)[ok],
                               torch.softmax(logits, -1).max(-1)[0][ok].double(),
                               rtol=1e-5, atol=0)
