"""What makes a GPU run work, proven on the CPU: direct-to-device loading, KV caches kept across prompts."""
import torch

from kangaroo.cache_pool import ReusableCaches
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_kwargs
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama


def test_cuda_loads_straight_to_the_device_with_low_cpu_memory():
    kw = load_kwargs("cuda:1", torch.float16)
    assert kw == {"dtype": torch.float16, "low_cpu_mem_usage": True, "device_map": {"": "cuda:1"}}
    assert "device_map" not in load_kwargs("cpu", torch.float32)


def test_cpu_load_of_a_model_folder(tiny_model_dir):
    lm = load_causal_lm(str(tiny_model_dir), device="cpu", dtype="float32")
    assert lm.dtype == torch.float32 and not any(p.requires_grad for p in lm.parameters())


def prompt(n, seed):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def test_caches_are_reused_across_prompts_and_grow_when_needed():
    lm = make_tiny_llama()
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    pool = ReusableCaches(km.new_caches, round_to=64)
    outs = []
    for n, seed in ((7, 1), (5, 2), (9, 3)):  # each fits the first allocation (7 + 20 + 5 <= 64)
        outs.append(kangaroo_generate(km, prompt(n, seed), 20, set(), steps=4, threshold=0.0, cache_pool=pool))
        if seed == 1:
            first = pool.caches.shallow.k.data_ptr()
    assert pool.allocations == 1 and pool.caches.shallow.k.data_ptr() == first
    for (n, seed), res in zip(((7, 1), (5, 2), (9, 3)), outs):
        assert res.tokens == greedy_decode(lm, prompt(n, seed), 20, set()).tokens
    long = kangaroo_generate(km, prompt(50, 4), 20, set(), steps=4, threshold=0.0, cache_pool=pool)
    assert pool.allocations == 2 and pool.max_len == 128
    assert long.tokens == greedy_decode(lm, prompt(50, 4), 20, set()).tokens


def test_greedy_reuses_one_cache_and_matches_fresh_caches():
    from kangaroo.cache_pool import greedy_cache_factory

    lm = make_tiny_llama()
    pool = ReusableCaches(greedy_cache_factory(lm), round_to=64)
    for n, seed in ((9, 1), (4, 2), (50, 3)):  # the third needs a larger cache
        assert greedy_decode(lm, prompt(n, seed), 20, set(), pool).tokens == greedy_decode(lm, prompt(n, seed), 20,
                                                                                           set()).tokens
    assert pool.allocations == 2 and pool.max_len == 128 and pool.caches.length == 50 + 19
