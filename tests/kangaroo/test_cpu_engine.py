"""The lean CPU engine: correct against the plain path, batch-invariant bit for bit, lossless end to end, and
out of the way where it does not apply."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.llama_forward import new_cache, run_layers
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")


@pytest.fixture
def engine_on():
    cpu_engine.set_enabled(True)
    yield
    cpu_engine.set_enabled(True)


def tiny32(seed=0, **kw):
    return make_tiny_llama(seed=seed, dtype=torch.float32, **kw)


@pytest.mark.parametrize("K,N", [(576, 1003), (37, 21), (8, 4)])
def test_linear_matches_f_linear_and_is_batch_invariant(K, N):
    g = torch.Generator().manual_seed(K)
    x, w = torch.randn(cpu_engine.MAX_ROWS, K, generator=g), torch.randn(N, K, generator=g)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        block = cpu_engine.linear(x, w)
        torch.testing.assert_close(block, torch.nn.functional.linear(x, w), rtol=1e-4, atol=1e-4)
        for n in (1, 2, 3, 5, 7):  # every prefix and every row alone: the same bits
            assert torch.equal(cpu_engine.linear(x[:n], w), block[:n])
        assert all(torch.equal(cpu_engine.linear(x[i:i + 1], w), block[i:i + 1]) for i in range(len(x)))
    torch.set_num_threads(1)


def _run(lm, chunks, max_len=64):
    body = lm.model
    cache = new_cache(lm.config, len(body.layers), max_len, torch.float32, "cpu")
    hs = [run_layers(body.layers, body.embed_tokens(c), cache, body.rotary_emb) for c in chunks]
    return torch.cat(hs, dim=1), cache


@pytest.mark.parametrize("kw", [{}, {"hidden_size": 48, "num_attention_heads": 4}])  # head_dim 8 and 12
def test_stack_matches_plain_path_and_blocks_equal_single_steps(engine_on, kw):
    lm = tiny32(**kw)
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(4))
    prefix, block = ids[:, :13], ids[:, 13:]
    cpu_engine.set_enabled(False)
    plain, _ = _run(lm, [prefix, block])
    cpu_engine.set_enabled(True)
    fast_block, cache_b = _run(lm, [prefix, block])
    fast_steps, cache_s = _run(lm, [prefix] + list(block.split(1, dim=1)))
    torch.testing.assert_close(fast_block[:, 13:], plain[:, 13:], rtol=1e-4, atol=1e-4)
    assert torch.equal(fast_block, fast_steps)  # a verify pass reproduces one-token steps exactly
    assert torch.equal(cache_b.k[..., :20, :], cache_s.k[..., :20, :])
    assert torch.equal(cache_b.v[..., :20, :], cache_s.v[..., :20, :])


def test_layers_are_fused_once_and_stay_views(engine_on):
    lm = tiny32()
    layer = lm.model.layers[0]
    stack = cpu_engine.stack_for(lm.model.layers)
    assert stack is not None and stack.num_layers == 4 and cpu_engine.stack_for(lm.model.layers) is stack
    qkv = layer._engine_weights[1][0]
    assert qkv.fmt == 0 and (qkv.rows, qkv.cols) == (64, 32)
    assert layer.self_attn.q_proj.weight.data_ptr() == qkv.data.data_ptr()  # the module reads the fused storage
    assert layer.self_attn.k_proj.weight.data_ptr() == qkv.data[32:].data_ptr()
    cpu_engine.stack_for(torch.nn.ModuleList(lm.model.layers[2:]))  # a second stack over the same layers
    assert layer._engine_weights[1][0] is qkv


@pytest.mark.parametrize("exit_layer,steps", [(1, 1), (2, 2), (2, 3), (3, 4), (2, 5), (1, 6)])
def test_float32_kangaroo_equals_greedy_on_the_engine(engine_on, exit_layer, steps):
    """In float32 only the engine's batch invariance makes this exact at every draft length."""
    lm = tiny32(seed=exit_layer + steps)
    ids = torch.randint(3, 97, (1, 9), generator=torch.Generator().manual_seed(steps))
    ref = greedy_decode(lm, ids, 40, set()).tokens
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=exit_layer)
    res = kangaroo_generate(km, ids, 40, set(), steps=steps, threshold=0.0)
    assert res.tokens == ref
    assert max(res.accept_lengths) <= steps + 1


def test_engine_steps_aside_where_it_does_not_apply(engine_on):
    h = torch.zeros(1, 3, 32)
    assert cpu_engine.applies(h)
    assert not cpu_engine.applies(h.double())
    assert not cpu_engine.applies(torch.zeros(1, cpu_engine.MAX_ROWS + 1, 32))  # a prefill: plain path
    cpu_engine.set_enabled(False)
    assert not cpu_engine.applies(h)
    cpu_engine.set_enabled(True)
    lm = tiny32(attention_bias=True)  # biases: not the engine's layer
    assert cpu_engine.stack_for(lm.model.layers) is None
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(0))
    hf = lm.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    assert greedy_decode(lm, ids, 12, set()).tokens == hf


def test_a_failed_build_prints_one_line_and_the_plain_path_runs(monkeypatch, capsys):
    import torch.utils.cpp_extension as cpp

    def no_compiler(**kw):
        raise RuntimeError("Error building extension 'kangaroo_cpu_engine': c++: command not found")

    monkeypatch.setattr(cpu_engine, "_state", {"enabled": True, "ext": None, "failed": False})
    monkeypatch.setattr(cpp, "load", no_compiler)
    assert cpu_engine.extension() is None and cpu_engine.extension() is None  # tried once, noticed once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not build" in err[0] and "plain PyTorch path" in err[0]
    assert not cpu_engine.applies(torch.zeros(1, 1, 32))
    lm = tiny32()
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(1))
    hf = lm.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    assert greedy_decode(lm, ids, 10, set()).tokens == hf



def early_ticks(call, n: int = 10) -> int:
    """Of n calls of ``call``, how many another Python thread ran in the first half of: a call that holds the GIL
    lets the ticking thread in only after it returns (or between calls), never early inside it."""
    import threading
    import time

    ticks, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    t = threading.Thread(target=tick)
    t.start()
    try:
        calls = []
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            calls.append((t0, time.perf_counter()))
    finally:
        stop.set()
        t.join()
    return sum(any(a < s < (a + b) / 2 for s in ticks) for a, b in calls)


def test_engine_calls_release_the_gil():
    """Another Python thread (the trainer, a server's event loop) runs while the engine computes."""
    from kangaroo.weight_formats import StoredWeight

    w = cpu_engine.engine_weight(StoredWeight("float32", torch.randn(8192, 2048), 8192, 2048))  # 64 MB a call
    x = torch.randn(cpu_engine.MAX_ROWS, 2048)
    torch.set_num_threads(1)
    assert early_ticks(lambda: cpu_engine.extension().linear(x, w)) >= 5
