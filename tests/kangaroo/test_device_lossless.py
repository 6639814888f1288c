"""Losslessness on the device under test: KANGAROO_TEST_DEVICE=cuda (scripts/gpu_check.sh sets it) runs these on
the GPU in float16, judged by kangaroo.lossless (a flip only at a near-tie within the stated tolerance); on the
CPU (the default) they run in float32 and require exact equality."""
import os

import pytest
import torch

from kangaroo.cache_pool import ReusableCaches
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.lossless import judge
from kangaroo.sampling import SamplingParams
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama

DEVICE = os.environ.get("KANGAROO_TEST_DEVICE", "cpu")
DTYPE = torch.float32 if DEVICE == "cpu" else torch.float16


@pytest.fixture(scope="module")
def device():
    if DEVICE != "cpu" and not torch.cuda.is_available():
        pytest.fail(f"KANGAROO_TEST_DEVICE={DEVICE} but no CUDA device is visible")
    return DEVICE


def test_tiny_model_lossless_on_device(device):
    lm = make_tiny_llama(dtype=DTYPE, vocab_size=256, layers=4).to(device)
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    pool = ReusableCaches(km.new_caches)
    for seed in range(3):
        ids = torch.randint(3, 256, (1, 9), generator=torch.Generator().manual_seed(seed)).to(device)
        ref = greedy_decode(lm, ids, 24, set()).tokens
        out = kangaroo_generate(km, ids, 24, set(), steps=4, threshold=0.3, cache_pool=pool).tokens
        v = judge(lm, ids, ref, out)
        assert v.ok, v.line(f"seed {seed}")


def test_tiny_model_sampled_lossless_on_device(device):
    """Sampled: the noise is drawn on the device from the same integer hash; a difference is judged by the gap of
    the perturbed scores there."""
    lm = make_tiny_llama(dtype=DTYPE, vocab_size=256, layers=4).to(device)
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    for seed in range(3):
        p = SamplingParams(0.8, top_p=0.95, seed=seed)
        ids = torch.randint(3, 256, (1, 9), generator=torch.Generator().manual_seed(seed)).to(device)
        ref = greedy_decode(lm, ids, 24, set(), sampling=p).tokens
        out = kangaroo_generate(km, ids, 24, set(), steps=4, threshold=0.3, sampling=p).tokens
        v = judge(lm, ids, ref, out, sampling=p)
        assert v.ok, v.line(f"seed {seed}")


@pytest.mark.skipif(DEVICE == "cpu", reason="on the CPU tests/evaluation/test_drivers.py checks the real model")
def test_real_model_lossless_on_device(device, real_tokenizer):
    from kangaroo.chat import chat_prompt_ids
    from kangaroo.greedy import eos_ids_of
    from kangaroo.model_loading import load_causal_lm

    lm = load_causal_lm("smollm2-135m", device=device, dtype=DTYPE)
    km = KangarooModel(model_id="smollm2-135m", base_model=lm, exit_layer=2)
    eos = eos_ids_of(real_tokenizer, lm.config)
    for text in ("Write a haiku about the sea.", "Explain what a hash table is.", "List three prime numbers."):
        ids = chat_prompt_ids(real_tokenizer, [{"role": "user", "content": text}], "smollm2-135m", device=device)
        ref = greedy_decode(lm, ids, 48, eos).tokens
        out = kangaroo_generate(km, ids, 48, eos, steps=6, threshold=0.6).tokens
        v = judge(lm, ids, ref, out)
        assert v.ok, v.line(text)
