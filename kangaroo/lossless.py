"""Judge a lossless method's output against the greedy reference, with the one allowance float16 on a GPU needs.

In float32 the verifier's n-row pass and greedy decoding's 1-row steps agree exactly, so any difference is a bug.
In float16/bfloat16 on CUDA the two kernels round differently, and where the verifier's top two logits are
(nearly) tied the argmax can flip; from there the two outputs diverge, both being greedy outputs of the same model
up to rounding. ``judge`` finds the first differing position, measures the verifier's top-2 logit gap there (one
forward of the full model over prompt + the reference's common prefix, in the model's own dtype) and accepts the
difference only when that gap is within the dtype's stated tolerance. Sampled (``kangaroo/sampling.py``), the
pick is the argmax of the perturbed scores (tempered, truncated logits plus the noise of that position): the gap
is then the top-2 gap of those scores, times the temperature (in logit units again).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kangaroo.sampling import GREEDY, SamplingParams, noise, truncated

# top-2 logit gap (in logit units) under which a flipped argmax counts as rounding, not a bug
TIE_TOLERANCE = {torch.float32: 0.0, torch.float64: 0.0, torch.float16: 0.125, torch.bfloat16: 0.5}


@dataclass
class Verdict:
    ok: bool
    position: int | None = None      # first differing new-token index (None: identical)
    gap: float | None = None         # verifier top-2 logit gap there
    tolerance: float = 0.0

    def line(self, what: str = "output") -> str:
        if self.position is None:
            return f"{what}: identical"
        state = "within" if self.ok else "ABOVE"
        return (f"{what}: first difference at new token {self.position}, verifier top-2 logit gap {self.gap:.4f} "
                f"({state} the tolerance {self.tolerance} of this dtype)")


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def top2_gap(lm, ids: torch.Tensor, sampling: SamplingParams = GREEDY) -> float:
    """Top-1 minus top-2 logit of the next token after ``ids`` [1, n]; sampled, of its perturbed scores (times T)."""
    logits = lm(input_ids=ids).logits[0, -1].float()
    if not sampling.greedy:
        cols, s = truncated(logits, sampling)
        if len(cols) < 2:
            return float("inf")
        logits = (s + noise(sampling.seed, ids.shape[1], cols)) * sampling.temperature
    top = logits.topk(2).values
    return float(top[0] - top[1])


def judge(lm, prompt_ids: torch.Tensor, reference: list[int], output: list[int],
          tolerance: float | None = None, sampling: SamplingParams = GREEDY) -> Verdict:
    """``reference``: the plain decoder's new tokens (greedy, or sampled with ``sampling``); ``output``: the
    method's. ``tolerance`` defaults to the dtype's."""
    tol = TIE_TOLERANCE.get(lm.dtype, 0.0) if tolerance is None else tolerance
    pos = first_difference(reference, output)
    if pos is None:
        return Verdict(True, tolerance=tol)
    if pos >= min(len(reference), len(output)):  # one stopped early: not a near-tie, a real difference
        return Verdict(False, pos, float("inf"), tol)
    prefix = torch.tensor([reference[:pos]], dtype=prompt_ids.dtype, device=prompt_ids.device)
    gap = top2_gap(lm, torch.cat([prompt_ids, prefix], dim=1), sampling)
    return Verdict(gap <= tol and tol > 0, pos, gap, tol)
