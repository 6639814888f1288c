"""--adapter-mode train: the identity start, the sliding window (draft time == training's segment forward), the
layer-k rows kept in the shallow cache (cropped with it), losslessness, the adapter folder with its window."""
import pytest
import torch

from kangaroo.adapter import load_adapter, save_adapter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.llama_forward import rotary_for, window_mask
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama


def trained(lm, window=4, path=None):
    return KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode="train", adapter_window=window,
                         adapter_path=path)


@torch.no_grad()
def perturb(adapter, seed=3, scale=0.3):
    """Weights away from the identity start (as after training)."""
    g = torch.Generator().manual_seed(seed)
    for p in adapter.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def agreeable_llama():
    """A tiny Llama whose deep layers add nothing: the identity drafter's drafts are all accepted, and an adapter
    ``perturb``-ed by 0.1 gets some accepted and some rejected (blocks of every accepted length)."""
    lm = make_tiny_llama()
    with torch.no_grad():
        for layer in lm.model.layers[2:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return lm


def ids(n=7, seed=3):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def test_fresh_adapter_is_exactly_the_identity_drafter():
    lm = make_tiny_llama()
    km, ident = trained(lm), KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    out = km.forward_shallow(ids(9), km.new_caches(16).shallow)
    torch.testing.assert_close(out.hk, km.norm(out.h), rtol=0, atol=1e-12)  # hk == final_norm(h_k)
    layer = lm.model.layers[2]  # layer k: the one the adapter stands in for
    a = km.trained_adapter
    assert torch.equal(a.self_attn.q_proj.weight, layer.self_attn.q_proj.weight)
    assert torch.equal(a.input_layernorm.weight, layer.input_layernorm.weight)
    assert torch.equal(a.norm.weight, lm.model.norm.weight) and not a.self_attn.o_proj.weight.any()
    drafts = {}
    for name, m in (("train", km), ("identity", ident)):
        got = []
        kangaroo_generate(m, ids(), 30, set(), steps=4, threshold=0.0, on_block=lambda b: got.append(b.draft.tokens))
        drafts[name] = got
    assert drafts["train"] == drafts["identity"]


def test_adapter_owns_its_tensors_and_trains_while_the_model_stays_frozen():
    lm = make_tiny_llama()
    base = {k: v.clone() for k, v in lm.state_dict().items()}
    km = trained(lm)
    assert all(p.requires_grad for p in km.trained_adapter.parameters())
    assert not any(p.requires_grad for p in lm.parameters())
    perturb(km.trained_adapter)
    assert all(torch.equal(v, base[k]) for k, v in lm.state_dict().items())


def test_window_mask_is_causal_and_sliding():
    for start, n, w in ((0, 5, 3), (4, 3, 2), (7, 1, 4), (2, 4, 10)):
        key_from, mask = window_mask(start, n, w, "cpu")
        q = torch.arange(start, start + n)[:, None]
        k = torch.arange(0, start + n)[None, :]
        want = (k <= q) & (k > q - w)
        assert want[:, :key_from].any() == False  # noqa: E712 - nothing the queries see is cut off
        got = torch.ones(n, start + n - key_from, dtype=torch.bool) if mask is None else mask
        assert torch.equal(got, want[:, key_from:])


@pytest.mark.parametrize("window", [1, 3, 64])
def test_draft_time_attention_equals_the_segment_forward(window):
    """hk computed through the cache (prefill, then rows one by one and a few at a time) == forward_last over the
    segment of the ``window`` positions ending there, with their own RoPE positions: what the trainer computes."""
    lm = make_tiny_llama()
    km = trained(lm, window)
    perturb(km.trained_adapter)
    seq = ids(12)
    cache = km.new_caches(16).shallow
    hks = [km.forward_shallow(seq[:, a:b], cache).hk[0] for a, b in ((0, 5), (5, 6), (6, 7), (7, 10), (10, 12))]
    hk, h = torch.cat(hks), cache.rows[0, :12]
    cos, sin = rotary_for(km.rotary_emb, h[None], 0)
    for p in range(12):
        first = max(0, p - window + 1)
        seg = h[first:p + 1][None]
        got = km.trained_adapter.forward_last(seg, cos[:, first:p + 1], sin[:, first:p + 1],
                                              torch.ones(1, p + 1 - first, dtype=torch.bool))
        torch.testing.assert_close(got[0], hk[p], rtol=1e-9, atol=1e-9)


def test_the_adapter_runs_only_where_hk_is_read_under_the_weights_of_that_moment():
    """A windowed adapter's layer costs nothing until a draft reads hk: no call while the shallow passes (and the
    cache) move on, one when it is read, over the rows as they were, with the weights of the read."""
    lm = make_tiny_llama()
    km = trained(lm, 3)
    perturb(km.trained_adapter)
    calls, run = [], km.trained_adapter.forward_rows
    km.trained_adapter.forward_rows = lambda *a: calls.append(a[-1]) or run(*a)
    seq, cache = ids(9), km.new_caches(16).shallow
    km.forward_shallow(seq[:, :6], cache)
    out = km.forward_shallow(seq[:, 6:7], cache)
    km.forward_shallow(seq[:, 7:9], cache)  # the cache moves on before hk is read
    assert calls == [] and cache.k.shape[0] == km.exit_layer  # no adapter layer in the shallow cache
    perturb(km.trained_adapter, seed=5)  # a published update before the read: the read uses it
    before = out.hk
    assert calls == [1] and out.hk is before  # computed once, for the one row
    fresh = km.new_caches(16).shallow
    km.forward_shallow(seq[:, :7], fresh)
    h = fresh.rows[0, :7]
    cos, sin = rotary_for(km.rotary_emb, h[None], 0)
    want = run(h[None, 4:7], cos[:, 4:7], sin[:, 4:7], 1)
    torch.testing.assert_close(before, want, rtol=1e-9, atol=1e-9)


def test_padding_rows_are_masked_out_of_the_segment_forward():
    lm = make_tiny_llama()
    km = trained(lm, 4)
    perturb(km.trained_adapter)
    h = torch.randn(1, 2, 32, dtype=torch.float64)
    pos = torch.tensor([[5, 6]])
    cos, sin = km.rotary_emb(h, pos)
    want = km.trained_adapter.forward_last(h, cos, sin, torch.ones(1, 2, dtype=torch.bool))
    padded = torch.cat([torch.randn(1, 2, 32, dtype=torch.float64), h], dim=1)
    cos_p, sin_p = km.rotary_emb(padded, torch.tensor([[0, 0, 5, 6]]))
    got = km.trained_adapter.forward_last(padded, cos_p, sin_p, torch.tensor([[False, False, True, True]]))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def committed_inputs(prompt, blocks):
    """Every position the caches hold after the blocks: the prompt and all committed tokens but the last (the
    last block may commit past the token budget; its last token was never an input)."""
    return torch.cat([prompt, torch.tensor([[t for b in blocks for t in b.committed]])], dim=1)[:, :-1]


def test_cache_rows_hold_the_committed_sequence_after_rollbacks():
    lm = agreeable_llama()
    km = trained(lm, 4)
    perturb(km.trained_adapter, scale=0.1)  # drafts are rejected now and then: rows of rejected drafts are cropped
    caches = km.new_caches(64)

    class Pool:
        def get(self, n):
            return caches

    prompt = ids(6)
    blocks = []
    kangaroo_generate(km, prompt, 30, set(), steps=4, threshold=0.0, cache_pool=Pool(), on_block=blocks.append)
    assert any(0 < b.accepted < b.drafted for b in blocks)
    seq = committed_inputs(prompt, blocks)
    fresh = km.new_caches(64).shallow
    km.forward_shallow(seq, fresh)
    n = seq.shape[1]
    assert caches.shallow.length == n
    torch.testing.assert_close(caches.shallow.rows[0, :n], fresh.rows[0, :n], rtol=1e-9, atol=1e-9)
    # each block's context ends at its last committed input and starts window - 1 positions before its x
    pos = prompt.shape[1] - 1
    for b in blocks:
        c = b.context
        assert c.first_pos == max(0, pos - 3) and c.first_pos + c.h.shape[0] - 1 == pos + b.accepted
        torch.testing.assert_close(c.h, fresh.rows[0, c.first_pos:pos + b.accepted + 1], rtol=1e-9, atol=1e-9)
        pos += b.accepted + 1


def test_trained_adapter_is_lossless_and_drafts_differently():
    lm = make_tiny_llama()
    km, ident = trained(lm, 3), KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    perturb(km.trained_adapter)
    for seed in (1, 2):
        a = kangaroo_generate(km, ids(seed=seed), 30, set(), steps=4, threshold=0.0)
        b = kangaroo_generate(ident, ids(seed=seed), 30, set(), steps=4, threshold=0.0)
        assert a.tokens == b.tokens == greedy_decode(lm, ids(seed=seed), 30, set()).tokens
        assert a.accept_lengths != b.accept_lengths


def test_adapter_folder_keeps_the_window_and_deploys_the_same_drafter(tmp_path):
    lm = make_tiny_llama()
    km = trained(lm, 5)
    perturb(km.trained_adapter)
    save_adapter(km.trained_adapter, tmp_path / "ad")
    assert load_adapter(tmp_path / "ad", lm.config).window == 5
    deployed = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode="load",
                             adapter_path=str(tmp_path / "ad"))
    assert deployed.trained_adapter is None and deployed.adapter.window == 5
    seq = ids(12)
    a = km.forward_shallow(seq, km.new_caches(16).shallow).hk
    b = deployed.forward_shallow(seq, deployed.new_caches(16).shallow).hk
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # the folder holds float32 (this model is float64)
    restart = trained(lm, 7, path=str(tmp_path / "ad"))  # --adapter-mode train from a folder: its weights, this window
    assert restart.trained_adapter.window == 7
    torch.testing.assert_close(restart.trained_adapter.self_attn.o_proj.weight,
                               km.trained_adapter.self_attn.o_proj.weight, rtol=1e-6, atol=1e-7)
