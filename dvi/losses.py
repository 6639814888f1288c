"""DVI loss terms as pure functions of tensors. Each returns a batch-mean scalar, computed in float32.

KD temperature convention: BOTH distributions are tempered, p = softmax(z / tau), q = softmax(d / tau), and the
KL is multiplied by tau**2 (Hinton et al. 2015) so its gradient magnitude does not shrink as 1/tau**2 and the
KD weight means the same thing at any tau. The verifier side is always detached (it is a fixed target).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _tempered_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """tau**2 * mean_b KL(softmax(p/tau) || softmax(q/tau)) over the last dim."""
    log_p = F.log_softmax(p_logits.float() / tau, dim=-1)
    log_q = F.log_softmax(q_logits.float() / tau, dim=-1)
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)  # 0 * log 0 = 0 (e.g. -inf-masked logits)
    return kl.mean() * tau ** 2


def kd_forward_kl_full(draft_logits: torch.Tensor, verifier_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(p_ver || p_draft) over the full vocabulary, both tempered, times tau**2. [B, V], [B, V] -> scalar."""
    return _tempered_kl(verifier_logits.detach(), draft_logits, tau)


def kd_reverse_kl_full(draft_logits: torch.Tensor, verifier_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(p_draft || p_ver) over the full vocabulary, both tempered, times tau**2 (mode-seeking)."""
    return _tempered_kl(draft_logits, verifier_logits.detach(), tau)


def kd_forward_kl_topk(draft_gathered: torch.Tensor, z_val: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(p_ver || p_draft) with BOTH distributions renormalised over the K stored coordinates.

    An approximation of the full-V KL: the verifier mass outside its top-K is dropped, and the drafter is only
    compared on those K tokens. ``draft_gathered = draft_logits.gather(1, z_idx)`` [B, K]; z_val [B, K].
    """
    return _tempered_kl(z_val.detach(), draft_gathered, tau)


def kd_reverse_kl_topk(draft_gathered: torch.Tensor, z_val: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(p_draft || p_ver) renormalised over the K stored coordinates (same approximation as the forward one)."""
    return _tempered_kl(draft_gathered, z_val.detach(), tau)


MASKED_LOGIT = -1.0e4  # finite: exp underflows to exactly 0 (no mass) while logs and gradients stay finite


def restrict_topk(draft_gathered: torch.Tensor, z_val: torch.Tensor, valid: torch.Tensor):
    """Pruned drafter vocabulary (FR-Spec): keep only the stored top-K coordinates inside the sub-vocabulary.

    ``valid`` [B, K] marks them; the others get ``MASKED_LOGIT`` on both sides, so the KD terms renormalise over
    top-K INTERSECTED with the sub-vocabulary. Rows with no valid coordinate are dropped (nothing to compare).
    Returns (draft [B', K], z_val [B', K]).
    """
    rows = valid.any(dim=1)
    valid = valid[rows]
    a = draft_gathered[rows].masked_fill(~valid, MASKED_LOGIT)
    b = z_val[rows].float().masked_fill(~valid, MASKED_LOGIT)
    return a, b


def _judged(mask: torch.Tensor, kd_only) -> torch.Tensor:
    return mask if kd_only is None else mask & ~kd_only.bool()


def ce_mask(reward: torch.Tensor, is_first_reject: torch.Tensor, kd_only=None) -> torch.Tensor:
    """Samples the CE term trains on: accepted drafts only (never a KD-only row of dense supervision)."""
    return _judged(reward > 0.5, kd_only)


def pg_mask(reward: torch.Tensor, is_first_reject: torch.Tensor, kd_only=None) -> torch.Tensor:
    """Samples the policy gradient trains on: accepted drafts and the first rejected one of each block (never a
    KD-only row)."""
    return _judged((reward > 0.5) | is_first_reject.bool(), kd_only)


def _token_logp(draft_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(draft_logits.float(), dim=-1).gather(1, tokens.long()[:, None]).squeeze(1)


def ce_accepted(draft_logits: torch.Tensor, tokens: torch.Tensor, reward: torch.Tensor,
                kd_only: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over accepted samples (KD-only rows excluded) of -log q(token). 0 (graph kept) when there is none."""
    mask = _judged(reward > 0.5, kd_only)
    if not bool(mask.any()):
        return draft_logits.float().sum() * 0
    return -_token_logp(draft_logits[mask], tokens[mask]).mean()


def policy_gradient(draft_logits: torch.Tensor, tokens: torch.Tensor, reward: torch.Tensor,
                    is_first_reject: torch.Tensor, baseline: float,
                    kd_only: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE: -(sum over pg-masked samples of (reward - baseline) * log q(token)) / n_masked.

    log q at temperature 1 over the full vocabulary; the advantage is a constant (no gradient). KD-only rows are
    not in the mask.
    """
    mask = pg_mask(reward, is_first_reject, kd_only)
    if not bool(mask.any()):
        return draft_logits.float().sum() * 0
    adv = (reward[mask].float() - baseline).detach()
    return -(adv * _token_logp(draft_logits[mask], tokens[mask])).sum() / mask.sum()


def kd_top1(draft_logits: torch.Tensor, verifier_tokens: torch.Tensor) -> torch.Tensor:
    """Top-1 distillation (KD at tau -> 0): mean over rows of -log q(v), v the verifier's greedy token there.
    It trains exactly what acceptance tests (the drafter's argmax against the verifier's) on every row with verifier
    logits, judged or KD-only. 0 (graph kept) for an empty batch."""
    if not draft_logits.shape[0]:
        return draft_logits.float().sum() * 0
    return -_token_logp(draft_logits, verifier_tokens).mean()


def expected_acceptance(draft_logits: torch.Tensor, verifier_tokens: torch.Tensor, reward: torch.Tensor,
                        is_first_reject: torch.Tensor, kd_only: torch.Tensor | None = None) -> torch.Tensor:
    """The policy gradient with the verifier's counterfactual reward: a greedy verifier accepts a drafted token y
    at a judged position iff y == v, so the reward of EVERY token is known there and the expected reward of the
    drafting policy is q(v). Loss = -mean q(v) over the PG-masked rows; its gradient q(v) grad log q(v) is the
    exact policy gradient (no sampling, no baseline, no variance). Unlike REINFORCE on the drafter's own argmax,
    a rejection moves mass to the verifier's token, not to the drafter's other guesses."""
    mask = pg_mask(reward, is_first_reject, kd_only)
    if not bool(mask.any()):
        return draft_logits.float().sum() * 0
    return -_token_logp(draft_logits[mask], verifier_tokens[mask]).exp().mean()


def entropy(draft_logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of softmax(draft_logits)."""
    logq = F.log_softmax(draft_logits.float(), dim=-1)
    return -(logq.exp() * logq).sum(-1).mean()
