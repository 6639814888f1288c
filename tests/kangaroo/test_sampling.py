"""The sampler itself (kangaroo/sampling.py): the noise is a function of (seed, position, token id) alone, truncation
is defined by values, temperature 0 is greedy bit for bit, and over many seeds the picks follow the softmax of the
tempered, truncated logits (a chi-square test at a fixed significance, on fixed seeds: it cannot flake, and it
rejects a wrong temperature)."""
import math

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from common.errors import ConfigError
from kangaroo import sampling as S
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.llama_forward import argmax_rows
from kangaroo.sampling import GREEDY, SamplingParams, noise, pick_rows, sample, token_prob, truncated
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama, prompts

ALPHA = 1e-3   # the significance of the chi-square test


# ----------------------------------------------------------------------------------------------- the noise
def test_the_hash_is_splitmix64_of_the_counter_in_unsigned_arithmetic():
    ids = torch.tensor([0, 1, 2, 96, 4095, 49151, 151935])
    for seed, pos in [(0, 0), (123, 45), (-7, 10 ** 6), (2 ** 70 + 3, 2 ** 40)]:
        key = S.position_key(seed, pos)
        want = [S._mix((key + (int(i) + 1) * S._GOLDEN) & S._M64) for i in ids]
        assert [int(h) & S._M64 for h in S.hash_bits(seed, pos, ids)] == want
        u = [((w >> 12) + 0.5) * 2.0 ** -52 for w in want]
        g = [-math.log(-math.log(x)) for x in u]
        assert torch.allclose(noise(seed, pos, ids).double(), torch.tensor(g, dtype=torch.float64), rtol=1e-6)


def test_the_noise_depends_on_seed_position_and_id_only():
    ids = torch.arange(49152)
    g = noise(5, 17, ids)
    perm = torch.randperm(49152, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noise(5, 17, perm), g[perm])                     # any order
    assert torch.equal(noise(5, 17, perm[:37]), g[perm[:37]])           # any subset, any length
    assert torch.equal(noise(5, 17, ids.reshape(3, -1)).reshape(-1), g)  # any shape
    assert torch.equal(noise(5, 17, ids.to(torch.int32)), g)            # any integer dtype
    assert not torch.equal(noise(6, 17, ids), g) and not torch.equal(noise(5, 18, ids), g)
    assert torch.isfinite(g).all() and abs(float(g.double().mean()) - 0.5772) < 0.02  # Gumbel: mean = Euler's gamma
    assert abs(float(g.double().var()) - math.pi ** 2 / 6) < 0.05


def test_a_row_picks_the_same_alone_or_among_others():
    z = torch.randn(5, 97, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    p = SamplingParams(0.9, top_p=0.95, seed=3)
    together = pick_rows(z, 40, p)
    assert together == [pick_rows(z[j:j + 1], 40 + j, p)[0] for j in range(5)]
    assert together == [sample(z[j].clone(), 40 + j, p) for j in range(5)]


def test_a_pruned_head_sees_the_noise_of_the_full_vocabulary_id():
    """Columns permuted (a pruned drafter's order): the same logits per token give the same token."""
    z = torch.randn(97, generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(97, generator=torch.Generator().manual_seed(3))
    for seed in range(20):
        p = SamplingParams(1.0, top_k=30, seed=seed)
        assert int(perm[sample(z[perm], 8, p, ids=perm)]) == sample(z, 8, p)


# ----------------------------------------------------------------------------------------------- truncation
def test_top_k_keeps_ties_and_top_p_the_smallest_nucleus():
    z = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0])
    cols, s = truncated(z, SamplingParams(1.0, top_k=2))
    assert cols.tolist() == [0, 2, 3] and torch.equal(s, z[[0, 2, 3]])   # the 2nd value ties: kept
    cols, s = truncated(z, SamplingParams(0.5, top_k=1))
    assert cols.tolist() == [0] and s.tolist() == [6.0]                  # tempered
    p = torch.softmax(z, 0)                                             # 0.61 0.08 0.22 0.22 0.03
    assert truncated(z, SamplingParams(1.0, top_p=0.5))[0].tolist() == [0]
    assert truncated(z, SamplingParams(1.0, top_p=float(p[0]) + 0.01))[0].tolist() == [0, 2, 3]  # tie: both
    assert truncated(z, SamplingParams(1.0, top_p=0.999))[0].tolist() == [0, 1, 2, 3, 4]
    # top-p after top-k renormalises over what top-k kept
    assert truncated(z, SamplingParams(1.0, top_k=3, top_p=0.7))[0].tolist() == [0, 2, 3]
    assert token_prob(z, 1, SamplingParams(1.0, top_k=3)) == 0.0
    assert token_prob(z, 0, SamplingParams(1.0)) == pytest.approx(float(p[0]))


def test_a_wide_nucleus_is_read_past_the_first_prefix():
    z = torch.zeros(5000)   # uniform: top-p 0.9 keeps all ties, past every growing prefix
    assert len(truncated(z, SamplingParams(1.0, top_p=0.9))[0]) == 5000
    z = -torch.arange(5000.0) * 1e-3   # nearly flat, strictly decreasing: ~4500 tokens
    n = len(truncated(z, SamplingParams(1.0, top_p=0.9))[0])
    p = torch.softmax(z.double(), 0)
    assert n == int((torch.cumsum(p, 0) < 0.9).sum()) + 1 > 512


# ----------------------------------------------------------------------------------------------- greedy
def test_temperature_zero_is_greedy_bit_for_bit_with_no_noise(tiny_llama, monkeypatch):
    ids = prompts(1)[0]
    before = greedy_decode(tiny_llama, ids, 24, set()).tokens
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    spec = kangaroo_generate(km, ids, 24, set(), steps=4, threshold=0.0).tokens

    def boom(*a, **k):
        raise AssertionError("the greedy path drew noise")

    monkeypatch.setattr(S, "noise", boom)
    monkeypatch.setattr(S, "truncated", boom)
    z = torch.randn(3, 97, dtype=torch.float64)
    for p in (GREEDY, SamplingParams(0.0, top_p=0.5, top_k=3, seed=9), SamplingParams(S.GREEDY_BELOW / 2)):
        assert p.greedy and pick_rows(z, 0, p) == argmax_rows(z)
        assert greedy_decode(tiny_llama, ids, 24, set(), sampling=p).tokens == before
        assert kangaroo_generate(km, ids, 24, set(), steps=4, threshold=0.0, sampling=p).tokens == spec == before


@pytest.mark.parametrize("kw,text", [
    (dict(temperature=-1.0), "--temperature -1.0 must be a finite number >= 0 (0 decodes greedily)"),
    (dict(top_p=0.0), "--top-p 0.0 must lie in (0, 1] (1 keeps every token)"),
    (dict(top_k=-2), "--top-k -2 must be >= 0 (0 keeps every token)"),
    (dict(seed=2.5), "SamplingParams.seed 2.5 must be a whole number"),
    (dict(seed=True), "SamplingParams.seed True must be a whole number"),
])
def test_bad_values_are_one_line(kw, text):
    with pytest.raises(ConfigError) as e:
        SamplingParams(**kw)
    assert str(e.value) == text and "\n" not in text


# ----------------------------------------------------------------------------------------------- the distribution
def hf_distribution(z: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Hugging Face's definition of the sampled distribution (temperature, then top-k, then top-p)."""
    x = TemperatureLogitsWarper(p.temperature)(None, z[None].float())
    if p.top_k:
        x = TopKLogitsWarper(p.top_k)(None, x)
    if p.top_p < 1:
        x = TopPLogitsWarper(p.top_p)(None, x)
    return torch.softmax(x[0].double(), dim=0)


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square of ``counts`` against ``probs``: tokens expected >= 5 times are their own bins, the
    rest one bin (merged into the smallest bin if still under 5)."""
    n = counts.sum().double()
    e, o = probs * n, counts.double()
    big = e >= 5
    bins_e, bins_o = list(e[big]), list(o[big])
    rest_e, rest_o = e[~big].sum(), o[~big].sum()
    if rest_e > 0:
        if rest_e >= 5:
            bins_e.append(rest_e)
            bins_o.append(rest_o)
        else:
            i = min(range(len(bins_e)), key=lambda j: bins_e[j])
            bins_e[i], bins_o[i] = bins_e[i] + rest_e, bins_o[i] + rest_o
    e, o = torch.stack(bins_e), torch.stack(bins_o)
    stat = ((o - e) ** 2 / e).sum()
    return float(torch.special.gammaincc(torch.tensor((len(e) - 1) / 2.0, dtype=torch.float64), stat / 2))


def picks(z: torch.Tensor, p: SamplingParams, n: int, by: str = "seed") -> torch.Tensor:
    """Counts per token of n picks: over seeds 0..n-1 at one position, or over positions at one seed."""
    counts = torch.zeros(z.shape[-1], dtype=torch.long)
    for i in range(n):
        q = SamplingParams(p.temperature, p.top_p, p.top_k, seed=i if by == "seed" else p.seed)
        counts[sample(z, 7 if by == "seed" else 1000 + i, q)] += 1
    return counts


SETTINGS = [SamplingParams(0.5), SamplingParams(1.0), SamplingParams(1.5), SamplingParams(1.0, top_k=10),
            SamplingParams(0.8, top_p=0.8), SamplingParams(1.2, top_p=0.9, top_k=20)]


@pytest.fixture(scope="module")
def next_logits():
    lm = make_tiny_llama()
    ids = prompts(1)[0]
    return lm(input_ids=ids).logits[0, -1], lm, ids


@pytest.mark.parametrize("p", SETTINGS, ids=lambda p: f"T{p.temperature}-p{p.top_p}-k{p.top_k}")
def test_picks_follow_the_tempered_truncated_softmax(next_logits, p):
    z = next_logits[0]
    want = hf_distribution(z, p)
    for by in ("seed", "position"):
        counts = picks(z, p, 3000, by)
        assert counts[want == 0].sum() == 0, "a truncated token was picked"
        assert chi2_pvalue(counts, want) > ALPHA, by


@pytest.mark.parametrize("actual,claimed", [
    (SamplingParams(1.0), SamplingParams(1.3)),                               # a wrong temperature
    (SamplingParams(1.0, top_k=10), SamplingParams(1.0)),                     # truncation ignored
    (SamplingParams(0.8, top_p=0.8), SamplingParams(0.8, top_p=0.95)),        # a wider nucleus
])
def test_the_chi_square_test_rejects_the_wrong_distribution(next_logits, actual, claimed):
    """The test has the power to fail: picks under ``actual`` judged against ``claimed`` (whose support covers
    them, so only the chi-square can tell)."""
    z = next_logits[0]
    counts, probs = picks(z, actual, 3000), hf_distribution(z, claimed)
    assert counts[probs == 0].sum() == 0
    assert chi2_pvalue(counts, probs) < 1e-6


def test_the_plain_decoder_samples_with_that_pick(next_logits):
    """The chi-square above speaks for the decoder: its first token is ``sample`` at the prompt's length."""
    z, lm, ids = next_logits
    for seed in range(8):
        p = SamplingParams(1.0, top_p=0.9, seed=seed)
        assert greedy_decode(lm, ids, 1, set(), sampling=p).tokens == [sample(z, ids.shape[1], p)]
