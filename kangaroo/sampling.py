"""Sampling that speculation cannot change: each position's randomness depends on (seed, position) alone.

The pick at a position is Gumbel-max over the tempered, truncated logits,

    token = argmax_i  s_i + g(seed, pos, i)        s = logits / T, then top-k, then top-p (-inf outside)

with ``g`` standard Gumbel noise drawn from a counter-based hash of (seed, pos, full-vocabulary token id), not from
a stateful generator. Sampling is then greedy decoding over perturbed logits: the verifier's pick at a row is the
plain sampler's pick at that position (same logits, same noise), so "a draft is accepted iff it equals the
verifier's pick" keeps every output equal to plain sampling with the same seed, token for token, whoever drafts.
The drafters propose under the same noise (the self-drafter: the argmax of its own perturbed scores, the noise
indexed by full-vocabulary id so a pruned head sees the same noise for the same token); only their acceptance
depends on how well they do.

    SamplingParams(temperature, top_p, top_k, seed)   frozen; temperature 0 (below ``GREEDY_BELOW``): greedy
    pick_rows(logits [n, V], first_pos, params)       the pick of each row, row j at position first_pos + j
    sample(logits [V], pos, params, ids, prob)        one row's pick (a column) and, asked, its probability
    sample_top(logits [V], pos, params, ids, k)       the k best columns of the perturbed scores (the pick first)
                                                      and their probabilities: a drafter's branches under sampling
    token_prob(logits [V], token, params)             a token's probability under the tempered, truncated logits
    noise(seed, pos, ids)                             g at one position for the token ids ``ids`` (float32)

``pos`` is the absolute 0-based index of the new token in its sequence (prompt + output): a prompt of n tokens
samples its first new token at position n. The plain decoder, the verifier's rows and the self-drafter's
candidates all index the same way.

Greedy (temperature 0) takes no noise path at all: ``pick_rows`` is ``argmax_rows``, bit for bit as before.

The noise: splitmix64's finalizer over ``key(seed, pos) + (id + 1) * golden`` in int64 torch ops (multiplication
wraps; right shifts are made logical by masking), 52 bits to u in (0, 1), g = -log(-log u) in float64, rounded
to float32. The integer part is exact on every device and for any subset or order of ids; the float transform is
elementwise, and rounding it to float32 hides the last-bit differences of another device's log.

Truncation is defined by values, not by sort order: top-k keeps every token whose tempered logit is at least the
k-th largest (ties kept, as Hugging Face's ``TopKLogitsWarper``); top-p then keeps, in descending order of
probability (renormalised over what top-k kept), every token whose preceding mass is below top_p, and every token
tied with the last one kept (at least one token is always kept).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from common.config_fields import Rule, check_fields, setting
from kangaroo.llama_forward import argmax_rows

GREEDY_BELOW = 1e-5   # a temperature under this is greedy (vLLM's _SAMPLING_EPS): logits / T would overflow
_M64 = (1 << 64) - 1
_GOLDEN, _C1, _C2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _finite_at_least_0(x) -> bool:
    return math.isfinite(x) and x >= 0


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = setting(0.0, flag="--temperature", rule=Rule("must be a finite number >= 0",
                                                                        _finite_at_least_0, "0 decodes greedily"),
                                 help="sampling temperature; 0 decodes greedily. Speculative output equals plain "
                                      "sampling with the same --seed, token for token (kangaroo/sampling.py)")
    top_p: float = setting(1.0, flag="--top-p", rule=Rule("must lie in (0, 1]", lambda x: 0 < x <= 1,
                                                          "1 keeps every token"),
                           help="nucleus sampling: keep the most probable tokens up to this mass (1: all)")
    top_k: int = setting(0, flag="--top-k", rule=Rule("must be >= 0", lambda x: x >= 0, "0 keeps every token"),
                         help="keep only the k most probable tokens (0: all)")
    seed: int = setting(0, source="seed", help="the sampling seed (the drivers' --seed)")

    def __post_init__(self):
        check_fields(self)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def metadata(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}


GREEDY = SamplingParams()


# ----------------------------------------------------------------------------------------------- the noise
def _mix(z: int) -> int:
    """splitmix64's finalizer on an unsigned 64-bit Python int (the reference the torch version follows)."""
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def position_key(seed: int, pos: int) -> int:
    """The unsigned 64-bit key of one (seed, position)."""
    return _mix((_mix(seed & _M64) + (pos & _M64) * _GOLDEN) & _M64)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _lsr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic on signed ints)."""
    return (z >> s).bitwise_and_((1 << (64 - s)) - 1)


def hash_bits(seed: int, pos: int, ids: torch.Tensor) -> torch.Tensor:
    """int64 [n]: the 64 hash bits of each token id at (seed, pos) (two's complement of the unsigned value)."""
    z = ids.to(torch.int64).add(1).mul_(_signed(_GOLDEN)).add_(_signed(position_key(seed, pos)))
    z.bitwise_xor_(_lsr(z, 30)).mul_(_signed(_C1))
    z.bitwise_xor_(_lsr(z, 27)).mul_(_signed(_C2))
    return z.bitwise_xor_(_lsr(z, 31))


def noise(seed: int, pos: int, ids: torch.Tensor) -> torch.Tensor:
    """float32 [n] standard Gumbel noise of the token ids ``ids`` at (seed, pos)."""
    u = _lsr(hash_bits(seed, pos, ids), 12).to(torch.float64).add_(0.5).mul_(2.0 ** -52)   # in (0, 1), exact
    return u.log_().neg_().log_().neg_().to(torch.float32)


# ----------------------------------------------------------------------------------------------- truncation
def truncated(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(columns [K] int64 ascending, their tempered logits [K] float32): what top-k, then top-p, keep of one row."""
    s = logits.detach().reshape(-1).float() / params.temperature
    n = s.shape[0]
    keep = None
    if 0 < params.top_k < n:
        keep = s >= s.topk(params.top_k).values[-1]
    if params.top_p < 1:
        p = torch.softmax(s if keep is None else s.masked_fill(~keep, float("-inf")), dim=0)
        nucleus = _nucleus(p, params.top_p)
        keep = nucleus if keep is None else nucleus & keep
    if keep is None:
        return torch.arange(n, device=s.device), s
    cols = keep.nonzero().reshape(-1)
    return cols, s[cols]


def _nucleus(p: torch.Tensor, top_p: float) -> torch.Tensor:
    """bool [n]: the tokens top-p keeps of the probabilities ``p``. The descending order is read in growing top-k
    prefixes (a nucleus is usually a few dozen tokens: no full sort)."""
    n, k = p.shape[0], min(128, p.shape[0])
    while True:
        vals = p.topk(k).values
        kept = int((torch.cumsum(vals, dim=0) < top_p).sum()) + 1   # ranks whose preceding mass is below top_p
        if kept <= k or k == n:
            return p >= vals[min(kept, k) - 1]
        k = min(n, k * 8)


# ----------------------------------------------------------------------------------------------- the pick
def sample(logits: torch.Tensor, pos: int, params: SamplingParams, ids: torch.Tensor | None = None,
           prob: bool = False):
    """The pick of one row of logits [V] at position ``pos``: the column of the argmax of the tempered, truncated
    logits plus the noise. ``ids`` [V]: the full-vocabulary id of each column (a pruned drafter head; None: the
    column is the id), which the noise is indexed by. With ``prob``: (column, its probability under the tempered,
    truncated distribution), the confidence of a sampled proposal."""
    cols, s = truncated(logits, params)
    full = cols if ids is None else ids.to(cols.device)[cols]
    j = int(torch.argmax(s + noise(params.seed, pos, full)))
    if not prob:
        return int(cols[j])
    return int(cols[j]), float(torch.softmax(s, dim=0)[j])


def sample_top(logits: torch.Tensor, pos: int, params: SamplingParams, ids: torch.Tensor | None = None,
               k: int = 1) -> tuple[list[int], list[float]]:
    """The ``k`` (at most) best columns of one row's perturbed scores at ``pos``, the pick (``sample``'s) first, and
    their probabilities under the tempered, truncated distribution: what a drafter proposes as a tree's branches."""
    cols, s = truncated(logits, params)
    full = cols if ids is None else ids.to(cols.device)[cols]
    scores = s + noise(params.seed, pos, full)
    j = int(torch.argmax(scores))
    rest = [int(i) for i in scores.topk(min(k, len(cols))).indices if int(i) != j][:k - 1]
    probs = torch.softmax(s, dim=0)
    return [int(cols[i]) for i in [j] + rest], [float(probs[i]) for i in [j] + rest]


def pick_rows(logits: torch.Tensor, first_pos: int, params: SamplingParams = GREEDY,
              drafted: list[int] | None = None) -> list[int]:
    """The pick of each row of logits [n, V] (row j at position ``first_pos + j``): greedy's ``argmax_rows``
    (unchanged, no noise) at temperature 0, else ``sample`` row by row (each row alone: its pick cannot depend on
    the rows beside it). ``drafted``: the draft the rows verify (row j checks ``drafted[j]``); sampled, the picks
    then stop at the first row whose pick differs from it (accept reads no further; a greedy scan costs nothing)."""
    if params.greedy:
        return argmax_rows(logits)
    rows = logits.reshape(-1, logits.shape[-1])
    out: list[int] = []
    for j in range(rows.shape[0]):
        out.append(sample(rows[j], first_pos + j, params))
        if drafted is not None and (j >= len(drafted) or out[-1] != drafted[j]):
            break
    return out


def token_prob(logits: torch.Tensor, token: int, params: SamplingParams) -> float:
    """The probability of column ``token`` under the tempered, truncated distribution of logits [V] (0 outside)."""
    cols, s = truncated(logits, params)
    hit = (cols == token).nonzero()
    return float(torch.softmax(s, dim=0)[hit[0, 0]]) if hit.numel() else 0.0
