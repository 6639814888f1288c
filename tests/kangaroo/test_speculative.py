"""Speculative greedy == vanilla greedy == HF generate; the accept rule; caches after rollback."""
import pytest
import torch

from kangaroo.adapter import KangarooAdapter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import Draft, Verification, accept, kangaroo_generate, speculative_step, prefill
from tests.helpers import make_tiny_llama


def prompt(n=7, seed=3, vocab=97):
    return torch.randint(3, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def hf_greedy(lm, ids, n):
    out = lm.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("exit_layer,steps,threshold", [(1, 6, 0.0), (2, 3, 0.6), (3, 1, 0.0), (2, 6, 1.0)])
def test_kangaroo_equals_greedy_and_hf_generate(tiny_llama, exit_layer, steps, threshold):
    ids = prompt()
    ref = hf_greedy(tiny_llama, ids, 40)
    assert greedy_decode(tiny_llama, ids, 40, set()).tokens == ref
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=exit_layer)
    res = kangaroo_generate(km, ids, 40, set(), steps=steps, threshold=threshold)
    assert res.tokens == ref
    assert sum(res.accept_lengths) == 40 and all(1 <= a <= steps + 1 for a in res.accept_lengths)


def test_deep_layers_as_identity_accept_every_draft():
    """If the deep layers add nothing, the verifier equals the drafter: every draft is accepted."""
    lm = make_tiny_llama()
    for layer in lm.model.layers[2:]:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    res = kangaroo_generate(km, prompt(), 28, set(), steps=3, threshold=0.0)
    assert res.tokens == greedy_decode(lm, prompt(), 28, set()).tokens
    assert res.accept_lengths == [4] * 7


def test_block_rolls_caches_back_to_committed_length(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids = prompt()
    caches = km.new_caches(64)
    last = prefill(km, ids, caches)
    assert caches.shallow.length == caches.deep.length == ids.shape[1] - 1
    blk = speculative_step(km, last, caches, steps=4, threshold=0.0)
    assert blk.drafted == 4 and blk.draft.h.shape[1] == 5 and blk.draft.hk.shape[0] == 4
    assert blk.verification.logits.shape == (5, 97)
    assert caches.shallow.length == caches.deep.length == ids.shape[1] + blk.accepted
    assert blk.draft.hk_state_of(1).dtype == torch.float16 and blk.draft.hk_state_of(1).shape == (32,)


def test_accept_rule():
    d = Draft(tokens=[5, 6, 7], h=torch.zeros(1, 4, 2), hk=torch.zeros(3, 2), confidences=[1.0] * 3)
    assert accept(d, Verification(torch.zeros(4, 9), [5, 6, 1, 0])) == (2, [5, 6, 1])
    assert accept(d, Verification(torch.zeros(4, 9), [4, 6, 7, 0])) == (0, [4])
    assert accept(d, Verification(torch.zeros(4, 9), [5, 6, 7, 8])) == (3, [5, 6, 7, 8])


def test_threshold_stops_drafting(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    caches = km.new_caches(64)
    last = prefill(km, prompt(), caches)
    blk = speculative_step(km, last, caches, steps=6, threshold=1.01)  # nothing is that confident
    assert blk.drafted == 1


def test_eos_and_budget(tiny_llama):
    ids = prompt()
    ref = hf_greedy(tiny_llama, ids, 30)
    eos = ref[9]
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    res = kangaroo_generate(km, ids, 30, {eos}, steps=5, threshold=0.0)
    assert res.tokens == ref[:ref.index(eos) + 1]
    assert greedy_decode(tiny_llama, ids, 30, {eos}).tokens == res.tokens
    assert len(kangaroo_generate(km, ids, 3, set(), steps=5, threshold=0.0).tokens) == 3


def test_loaded_adapter_changes_drafts_not_output(tiny_llama):
    torch.manual_seed(5)
    adapter = KangarooAdapter(tiny_llama.config).to(torch.float64)
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids = prompt()
    drafts = {"identity": [], "adapter": []}
    identity = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0,
                                 on_block=lambda b: drafts["identity"].append(b.draft.tokens))
    km.adapter = adapter  # same as adapter_mode="load" after reading the folder
    res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0,
                            on_block=lambda b: drafts["adapter"].append(b.draft.tokens))
    assert res.tokens == hf_greedy(tiny_llama, ids, 30) == identity.tokens
    assert drafts["adapter"] != drafts["identity"]  # the adapter was used: it changed what was drafted
