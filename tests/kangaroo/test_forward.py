"""llama_forward + KVCache against Hugging Face's own forward, and the crop invariant."""
import pytest
import torch

from kangaroo.kv_cache import KVCache
from kangaroo.llama_forward import new_cache, run_layers


def logits_via_cache(lm, ids_chunks, cache):
    body = lm.model
    outs = []
    for chunk in ids_chunks:
        h = run_layers(body.layers, body.embed_tokens(chunk), cache, body.rotary_emb)
        outs.append(lm.lm_head(body.norm(h)))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("splits", [[12], [1] * 12, [5, 1, 4, 2]])
def test_cached_forward_equals_hf_forward(tiny_llama, splits):
    ids = torch.randint(0, 97, (1, sum(splits)), generator=torch.Generator().manual_seed(1))
    ref = tiny_llama(ids).logits
    cache = new_cache(tiny_llama.config, 4, 32, torch.float64, "cpu")
    got = logits_via_cache(tiny_llama, list(ids.split(splits, dim=1)), cache)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    assert cache.length == ids.shape[1]


def test_crop_then_rewrite_equals_fresh_run(tiny_llama):
    g = torch.Generator().manual_seed(2)
    prefix, junk, cont = (torch.randint(0, 97, (1, n), generator=g) for n in (6, 5, 4))
    cache = new_cache(tiny_llama.config, 4, 32, torch.float64, "cpu")
    logits_via_cache(tiny_llama, [prefix, junk], cache)
    cache.crop(6)
    got = logits_via_cache(tiny_llama, [cont], cache)
    fresh = new_cache(tiny_llama.config, 4, 32, torch.float64, "cpu")
    want = logits_via_cache(tiny_llama, [prefix, cont], fresh)[:, 6:]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cache_bounds():
    c = KVCache(num_layers=2, num_kv_heads=1, head_dim=4, max_len=5, dtype=torch.float32)
    k = torch.ones(1, 1, 3, 4)
    c.write(0, k, k)
    c.advance(3)
    with pytest.raises(ValueError):
        c.crop(4)
    with pytest.raises(RuntimeError, match="overflow"):
        c.write(0, k, k)
    c.crop(1)
    assert c.length == 1
    k_all, _ = c.write(1, k, k)
    assert k_all.shape == (1, 1, 4, 4)
    assert c.nbytes() == 2 * 2 * 1 * 1 * 5 * 4 * 4


def test_rotary_table_rows_equal_calls_for_those_positions():
    """``rotary_for`` reads a table the rotary module computed once: every slice equals the module's own call."""
    from kangaroo.llama_forward import rotary_for
    from tests.helpers import make_tiny_llama

    for kw in ({}, {"rope_theta": 100000.0, "hidden_size": 64}):
        lm = make_tiny_llama(dtype=torch.float32, **kw)
        rot = lm.model.rotary_emb
        h = torch.zeros(1, 7, lm.config.hidden_size)
        for start, n in ((0, 7), (5, 1), (1000, 3), (2500, 7), (3, 2)):
            got = rotary_for(rot, h[:, :n], start)
            ref = rot(h[:, :n], torch.arange(start, start + n)[None])
            assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(got, ref))
