"""The physical limits the profiler reports: bytes per token in the format the engine reads, and one core's
stream and FMA rates measured by the rate probes (an extension of their own, not the engine's)."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.stored_weights import convert
from scripts.profile import limits
from tests.helpers import make_tiny_llama

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")


def test_bytes_per_token_counts_each_matrix_in_the_format_read_and_the_head_once():
    lm = make_tiny_llama(dtype=torch.float32, hidden_size=64, intermediate_size=96)  # tied head
    norms = sum(p.numel() for n, p in lm.named_parameters() if "norm" in n)
    mats = sum(m.weight.numel() for m in limits.matrices_of(lm))
    assert mats == sum(p.numel() for n, p in lm.model.layers.named_parameters() if "norm" not in n) + 97 * 64
    assert limits.bytes_per_token(lm) == 4 * (norms + mats) and limits.weights_per_token(lm) == mats
    assert limits.stored_formats(lm) == f"float32 x{4 * 7 + 1}"
    convert(lm, "q4_1")
    assert limits.bytes_per_token(lm) == 4 * norms + mats // 32 * 20
    assert limits.stored_formats(lm) == f"q4_1 x{4 * 7 + 1}"


def test_stream_and_fma_rates_are_measured_by_an_extension_decoding_never_loads():
    assert 1e8 < limits.stream_rate(8, 2) < 1e12  # bytes/s
    assert 1e8 < limits.fma_rate(2) < 1e12        # FMAs/s
    probes, engine = cpu_engine.rate_probes(), cpu_engine.extension()
    assert probes is not engine and probes.isa == engine.isa
    assert not any(hasattr(engine, f) for f in ("stream_read", "fma_rate"))  # not in the production extension
