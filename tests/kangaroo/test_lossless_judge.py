"""The losslessness judge: exact in float32, a stated top-2-gap allowance in float16/bfloat16."""
import pytest
import torch

from kangaroo.greedy import greedy_decode
from kangaroo.lossless import TIE_TOLERANCE, first_difference, judge, top2_gap
from tests.helpers import make_tiny_llama


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_identical_output_passes_and_any_difference_fails_in_float32():
    lm = make_tiny_llama(dtype=torch.float32)
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(1))
    ref = greedy_decode(lm, ids, 12, set()).tokens
    assert judge(lm, ids, ref, list(ref)).ok
    wrong = ref[:4] + [(ref[4] + 1) % 97] + ref[5:]
    v = judge(lm, ids, ref, wrong)
    assert not v.ok and v.position == 4 and v.gap == top2_gap(lm, torch.cat([ids, torch.tensor([ref[:4]])], 1))
    assert TIE_TOLERANCE[torch.float32] == 0.0 and "ABOVE" in v.line()


def test_half_precision_accepts_a_flip_only_at_a_near_tie():
    lm = make_tiny_llama(dtype=torch.float32)
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(1))
    ref = greedy_decode(lm, ids, 12, set()).tokens
    wrong = ref[:4] + [(ref[4] + 1) % 97] + ref[5:]
    gap = judge(lm, ids, ref, wrong).gap
    assert judge(lm, ids, ref, wrong, tolerance=gap * 2).ok          # as float16 judges a near-tie
    assert not judge(lm, ids, ref, wrong, tolerance=gap / 2).ok      # a clear winner flipped: a bug
    assert not judge(lm, ids, ref, ref[:6], tolerance=1e9).ok        # stopping early is never a tie


def test_sampled_the_gap_is_that_of_the_perturbed_scores():
    from kangaroo.sampling import SamplingParams, noise, sample, truncated

    lm = make_tiny_llama(dtype=torch.float32)
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(1))
    p = SamplingParams(0.8, top_k=12, seed=5)
    z = lm(input_ids=ids).logits[0, -1]
    cols, s = truncated(z, p)
    scores = s + noise(p.seed, ids.shape[1], cols)
    top = scores.topk(2)
    assert int(cols[top.indices[0]]) == sample(z, ids.shape[1], p)   # the pick is the top perturbed score
    assert top2_gap(lm, ids, p) == pytest.approx(float(top.values[0] - top.values[1]) * 0.8, rel=1e-5)
    assert top2_gap(lm, ids, p) != top2_gap(lm, ids)
