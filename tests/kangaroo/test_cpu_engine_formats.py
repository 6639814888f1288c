"""Every weight format the engine reads (bfloat16, float16, GGUF Q8_0/Q4_0/Q4_1 blocks) computes, bit for bit,
what the float32 path computes on the dequantized weights: the expansion, a matmul of 1..16 rows at 1 and 2
threads, a decoder stack, the head; and greedy and speculative decoding equal HF ``generate`` on the
dequantized model."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.llama_forward import final_norm, new_cache, project, run_layers
from kangaroo.speculative import kangaroo_generate
from kangaroo.stored_weights import convert, matrices
from kangaroo.weight_formats import FORMATS, StoredWeight, dequantize, quantize
from tests.helpers import make_tiny_llama

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")
STORED = FORMATS[1:]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(bits(a), bits(b))


@pytest.fixture
def threads():
    yield
    torch.set_num_threads(1)


@pytest.mark.parametrize("fmt", STORED)
def test_expansion_equals_the_reference_dequantization(fmt):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(37, 96, generator=g) * torch.rand(37, 1, generator=g) * 3  # odd rows: a pair's lone row
    w[3, :32] = 0.0  # an all-zero block (d = 0)
    w[5, 32:64] = -w[5, 32:64].abs()
    s = quantize(w, fmt)
    ref = dequantize(s)
    ext = cpu_engine.extension()
    assert same(ext.dequantize(cpu_engine.engine_weight(s)), ref)
    ids = torch.tensor([36, 0, 5, 5])
    assert same(ext.dequantize(cpu_engine.engine_weight(s), ids), ref[ids])
    if fmt != "float16":
        assert not same(ref, w)  # the format is lossy: the test compares against the rounded values


@pytest.mark.parametrize("fmt", STORED)
@pytest.mark.parametrize("N", [1, 2, 29, 200])
def test_matmul_equals_float32_on_the_dequantized_weights(fmt, N, threads):
    g = torch.Generator().manual_seed(N)
    K = 160
    s = quantize(torch.randn(N, K, generator=g), fmt)
    w32 = cpu_engine.engine_weight(StoredWeight("float32", dequantize(s), N, K))
    ws = cpu_engine.engine_weight(s)
    x = torch.randn(cpu_engine.MAX_ROWS, K, generator=g)
    ext = cpu_engine.extension()
    for t in (1, 2):
        torch.set_num_threads(t)
        block = ext.linear(x, ws)
        assert same(block, ext.linear(x, w32))
        torch.testing.assert_close(block, x @ dequantize(s).T, rtol=1e-4, atol=1e-4)
        for n in range(1, cpu_engine.MAX_ROWS + 1):  # any number of rows: the same bits for each row
            assert same(ext.linear(x[:n], ws), block[:n])
        assert all(same(ext.linear(x[i:i + 1], ws), block[i:i + 1]) for i in range(len(x)))


def test_weights_that_do_not_fit_are_refused_with_a_reason():
    ext = cpu_engine.extension()
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize(torch.zeros(4, 48), "q4_1")
    with pytest.raises(RuntimeError, match="multiple of 32"):
        ext.Weight(torch.zeros(4 * 30, dtype=torch.uint8), FORMATS.index("q4_1"), 4, 48)
    with pytest.raises(RuntimeError, match="bytes"):
        ext.Weight(torch.zeros(79, dtype=torch.uint8), FORMATS.index("q4_1"), 4, 32)
    with pytest.raises(RuntimeError, match="columns"):
        ext.linear(torch.zeros(1, 16), cpu_engine.engine_weight(quantize(torch.zeros(4, 32), "q8_0")))
    with pytest.raises(ValueError, match="unknown weight format"):
        quantize(torch.zeros(4, 32), "q5_k")


def quantized_tiny(fmt: str, seed: int = 0, **kw):
    """A tiny Llama (hidden 64: every matrix fits blocks of 32) converted to ``fmt``: its float weights are the
    dequantized values and the engine reads the stored form."""
    lm = make_tiny_llama(seed=seed, dtype=torch.float32, hidden_size=64, intermediate_size=96, **kw)
    assert convert(lm, fmt) == len(matrices(lm))
    return lm


def plain_twin(lm):
    """The same model with no stored form attached: the engine reads the float32 weights."""
    import copy

    twin = copy.deepcopy(lm)
    for m in matrices(twin).values():
        m.__dict__.pop("stored_weight", None)
    return twin


def _hidden_and_logits(lm, chunks):
    body = lm.model
    cache = new_cache(lm.config, len(body.layers), 64, torch.float32, "cpu")
    hs = [run_layers(body.layers, body.embed_tokens(c), cache, body.rotary_emb) for c in chunks]
    h = torch.cat(hs, dim=1)
    return h, project(final_norm(body.norm, h), lm.lm_head.weight)


@pytest.mark.parametrize("fmt", STORED)
def test_stack_and_head_equal_float32_and_blocks_equal_steps(fmt, threads):
    lm = quantized_tiny(fmt)
    twin = plain_twin(lm)
    assert cpu_engine.stack_for(lm.model.layers) is not None
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(4))
    for t in (1, 2):
        torch.set_num_threads(t)
        h, logits = _hidden_and_logits(lm, [ids[:, :13], ids[:, 13:]])
        h32, logits32 = _hidden_and_logits(twin, [ids[:, :13], ids[:, 13:]])
        assert same(h, h32) and same(logits, logits32)
        h1, logits1 = _hidden_and_logits(lm, [ids[:, :13]] + list(ids[:, 13:].split(1, dim=1)))
        assert same(h1, h) and same(logits1, logits)


@pytest.mark.parametrize("fmt", STORED)
def test_greedy_and_speculative_equal_hf_generate_on_the_dequantized_model(fmt):
    lm = quantized_tiny(fmt, seed=3)
    ids = torch.randint(3, 97, (1, 9), generator=torch.Generator().manual_seed(5))
    hf = lm.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 9:].tolist()
    assert greedy_decode(lm, ids, 24, set()).tokens == hf
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    assert kangaroo_generate(km, ids, 24, set(), steps=4, threshold=0.0).tokens == hf


AVX2_SCRIPT = """
import sys, torch
from kangaroo import cpu_engine
from kangaroo.weight_formats import FORMATS, StoredWeight
from tests.kangaroo.test_cpu_engine_formats import _hidden_and_logits, quantized_tiny
assert cpu_engine.extension().isa == "avx2"
d = torch.load(sys.argv[1])
out = {"linear": [cpu_engine.extension().linear(d["x"], cpu_engine.engine_weight(StoredWeight(*s))) for s in d["w"]],
       "logits": [_hidden_and_logits(quantized_tiny(f), [d["ids"][:, :13], d["ids"][:, 13:]])[1] for f in FORMATS]}
torch.save(out, sys.argv[2])
"""


@pytest.mark.slow  # builds the extension a second time (cached after the first run)
def test_the_avx2_build_computes_the_same_bits(tmp_path):
    """``KANGAROO_ENGINE_ISA=avx2`` builds the AVX2 kernels (one row per 8-lane vector) on this CPU: every output
    equals the native build's (two rows per zmm where the CPU has AVX-512)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if cpu_engine.extension().isa != "avx512":
        pytest.skip("the native build is the AVX2 one on this CPU")
    g = torch.Generator().manual_seed(7)
    ws = [quantize(torch.randn(37, 96, generator=g), f) for f in FORMATS]
    x = torch.randn(cpu_engine.MAX_ROWS, 96, generator=g)
    ids = torch.randint(0, 97, (1, 20), generator=g)
    torch.save({"x": x, "w": [(s.fmt, s.data, s.rows, s.cols) for s in ws], "ids": ids}, tmp_path / "in.pt")
    env = {**os.environ, "KANGAROO_ENGINE_ISA": "avx2", "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", AVX2_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   cwd=repo, env=env, check=True, timeout=900)
    out = torch.load(tmp_path / "out.pt")
    for s, y in zip(ws, out["linear"]):
        assert same(cpu_engine.extension().linear(x, cpu_engine.engine_weight(s)), y), s.fmt
    for f, logits in zip(FORMATS, out["logits"]):
        assert same(_hidden_and_logits(quantized_tiny(f), [ids[:, :13], ids[:, 13:]])[1], logits), f


def test_drafter_heads_read_the_verifier_heads_stored_rows():
    """The LoRA head's frozen base and a pruned identity head are copies of the verifier's head rows: the engine
    reads them as the head is stored and gets the float32 copies' values."""
    from kangaroo.drafter_head import DrafterHead

    lm = quantized_tiny("q8_0", seed=2)
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    rows = torch.tensor([5, 0, 96, 40])
    hk = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    ext = cpu_engine.extension()
    for r in (None, rows):
        head = DrafterHead.from_verifier_head(km.head_model, r=4, alpha=4.0, rows=r)
        torch.nn.init.normal_(head.proj.B)
        assert cpu_engine.stored_of(head.proj.base).fmt == "q8_0"
        assert cpu_engine.weight_for(head.proj.base.weight).fmt == FORMATS.index("q8_0")
        w = head.proj.base.weight.detach()
        want = ext.linear(hk, cpu_engine.engine_weight(StoredWeight("float32", w.clone(), *w.shape)))
        assert same(head(hk), want + ((hk @ head.proj.A.T) @ head.proj.B.T) * head.proj.scaling)
    km.set_drafter_vocab(rows)
    assert same(km.drafter_logits_from_hk(hk), ext.linear(hk, cpu_engine.engine_weight(
        StoredWeight("float32", lm.lm_head.weight.detach()[rows].clone(), 4, 64))))
