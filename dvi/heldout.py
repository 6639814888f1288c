"""Held-out agreement: a learning metric that does not depend on what drafted. Every trainable drafter is evaluated,
as deployed, on one fixed held-out set (``dvi/heldout_capture.py``: prompts no run trains on, the frozen verifier's
greedy answers, the hidden states a drafter reads there).

    HeldoutDrafter     the protocol a trainable drafter implements to be evaluated: ``name``, ``predict(capture)``
    SelfHeldout        the self-drafter (layers [0, k) -> adapter -> LoRA drafter head) as it drafts
    FeatureHeldout     the feature drafter (the verifier's last-layer features -> its layer -> its LoRA head)
    score(...)         top-1 agreement and the teacher-forced accepted length of a drafter's predictions

**top1** is the share of held-out positions where the drafter's top-1 token equals the verifier's greedy token.
**accept_len** is, averaged over every start position, the run of consecutive agreeing positions from there (to the
end of that answer), capped at the drafter's ``--steps``: the drafts a chain started there would have accepted. The
set is teacher-forced: the drafter reads the verifier's own context at every position, which is exactly its context
while its drafts are accepted (an accepted draft is the verifier's token), so the run is what the chain reaches.
It counts accepted drafts only; tokens per verifier pass would add the verifier's own token (+1).

Unlike ``top1_agree`` (``acceptance.csv``, "over probed blocks": the blocks where the gate let the self-drafter
propose and no lookup drafted first), these numbers see the same positions whatever drafted, so a curve of them over
trainer steps shows learning, and the driver, the server and the library give the same number for the same weights.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch

from dvi.heldout_capture import HeldoutCapture
from kangaroo import cpu_engine
from kangaroo.cpu_engine import MAX_ROWS
from kangaroo.llama_forward import rotary_for
from kangaroo.packed_head import packed_head


class HeldoutDrafter(Protocol):
    """What the held-out evaluation needs of a trainable drafter.

    ``name``: a short label (CSV rows, plot lines, the ``drafter`` label of the server's gauges): ``self`` for the
    self-drafter. ``predict(capture)``: a CPU int64 tensor [capture.n] of full-vocabulary token ids, the drafter's
    top-1 at each held-out position, computed as it drafts (its precision, its vocabulary, its current weights), and
    changing nothing. Per position i it may read ``capture.ids[seq][:pos + 1]`` (the context, the token at ``pos``
    included), ``capture.h[seq][:pos + 1]`` (layer-k residuals), ``capture.h_last[seq][:pos + 1]`` (the verifier's
    last-layer hidden states; ``capture.rows(capture.h_last, -1)`` gathers the one before each position, the state
    that chose the token at ``pos``) and ``capture.hk`` (the identity drafter's features), never ``target`` or a
    later row. ``predict`` runs with gradients off, on the decode thread (at the start, the end, and after inline
    trainer steps) or on the trainer thread right after its step (``--dvi-trainer thread``): there it must read the
    weights the trainer just published (e.g. the trainer's copy), never weights the decode thread is changing.
    """

    name: str

    def predict(self, capture: HeldoutCapture) -> torch.Tensor: ...


@dataclass(frozen=True)
class HeldoutScore:
    top1: float        # share of positions where the drafter's top-1 is the verifier's greedy token
    accept_len: float  # mean, over start positions, of the consecutive agreeing positions (at most the steps)
    n: int             # positions evaluated


def chain_lengths(agree: torch.Tensor, seq: torch.Tensor, cap: int) -> torch.Tensor:
    """[n] int64: from each position, the run of consecutive True in ``agree`` within its sequence, at most ``cap``."""
    a, s = agree.tolist(), seq.tolist()
    out, run = [0] * len(a), 0
    for i in range(len(a) - 1, -1, -1):
        same = i + 1 < len(a) and s[i + 1] == s[i]
        run = (run + 1 if same else 1) if a[i] else 0
        out[i] = min(run, cap)
    return torch.tensor(out, dtype=torch.long)


def score(pred: torch.Tensor, capture: HeldoutCapture, steps: int) -> HeldoutScore:
    if pred.shape != capture.target.shape:
        raise ValueError(f"a held-out drafter predicted {tuple(pred.shape)} tokens for {capture.n} positions")
    agree = pred.cpu().long() == capture.target
    n = capture.n
    return HeldoutScore(float(agree.double().mean()) if n else 0.0,
                        float(chain_lengths(agree, capture.seq, steps).double().mean()) if n else 0.0, n)


class SelfHeldout:
    """The self-drafter as it drafts: its features (the identity drafter's final_norm(h), or its adapter's output
    over the window of layer-k rows), its drafter head in the precision it drafts with (the packed int8/bf16 rows
    with the live or merged LoRA delta, or the float32 head), its pruned vocabulary. ``weights`` (default the model)
    is the ``TrainableDrafter`` whose trained tensors are evaluated: the model, or the trainer's shadow, which holds
    the weights it publishes next. Call ``prepare`` on the decode thread once the drafter's head precision is set
    (``kangaroo.packed_head.configure``; the evaluator calls it before every evaluation on that thread)."""

    name = "self"

    def __init__(self, model, weights=None):
        self.model, self.weights = model, weights if weights is not None else model
        self.pack = None
        self._fixed: dict[int, torch.Tensor] = {}  # id(capture) -> features of a frozen adapter over the whole context

    def prepare(self) -> None:
        self.pack = packed_head(self.model)

    @torch.no_grad()
    def predict(self, capture: HeldoutCapture) -> torch.Tensor:
        head = self.weights.drafter_head
        return top1_ids(self.pack, head, self.features(capture), self.model.drafter_vocab,
                        None if head is not None else self.model.drafter_logits_from_hk)

    def features(self, capture: HeldoutCapture) -> torch.Tensor:
        """[n, d] the drafter features at each position, as the drafter computes them."""
        adapter = self.weights.trained_adapter or self.model.adapter
        if adapter is None:
            return capture.hk.to(self.model.device, self.model.dtype)
        if adapter.window is not None:
            return window_features(adapter, self.model.rotary_emb, capture)
        if id(capture) not in self._fixed:  # a frozen adapter over the whole context: its features never change
            self._fixed = {id(capture): replayed_features(self.model, capture)}
        return self._fixed[id(capture)]


def top1_ids(pack, head, rows: torch.Tensor, vocab, logits_fn=None) -> torch.Tensor:
    """[n] int64 full-vocabulary ids of a drafter head's top-1 for each of ``rows`` [n, d] (``head_top1`` in blocks of
    ``MAX_ROWS``; ``vocab``: a pruned head's ids)."""
    cols = torch.cat([head_top1(pack, head, rows[i:i + MAX_ROWS], logits_fn)
                      for i in range(0, rows.shape[0], MAX_ROWS)])
    return (cols if vocab is None else vocab.cpu()[cols.cpu()]).long()


def head_top1(pack, head, hk: torch.Tensor, logits_fn=None) -> torch.Tensor:
    """Columns of a drafter head's top-1 for up to ``MAX_ROWS`` rows, as ``kangaroo.packed_head.propose`` picks it
    for each row alone (the engine's kernels give a row the same bits in a block of rows): ``pack`` (made on the
    decode thread) with ``head``'s live LoRA delta (the weights evaluated), or ``head``'s float32 logits
    (``logits_fn`` where there is no LoRA head)."""
    pack = pack if cpu_engine.applies(hk) else None
    if pack is not None:
        if pack.lora is not None:  # the live LoRA delta: of the weights evaluated
            p = head.proj
            pack = copy.copy(pack)
            pack.lora = (p.A, p.B, p.scaling)
        return pack.top_k(hk.float().contiguous(), 1)[0][:, 0].long()
    logits = head(hk) if head is not None else logits_fn(hk)
    return torch.softmax(logits.float(), dim=-1).max(dim=-1).indices


class FeatureHeldout:
    """The feature drafter (``kangaroo/feature_drafter.py``) on the held-out set, teacher-forced as its first drafted
    token is at draft time: entry pos - 1 = (the verifier's feature there, the token at pos), attending to its last
    ``window`` entries over TRUE features, predicts the token at pos + 1 (a sequence's position 0 has no entry: -1,
    never agreeing). ``weights``: the model, or the trainer's shadow (its ``feature_drafter`` holds the weights it
    publishes next). Its head in the precision it drafts with (``prepare``, on the decode thread, as
    ``SelfHeldout``'s)."""

    name = "feature"

    def __init__(self, model, weights=None):
        self.model, self.weights = model, weights if weights is not None else model
        self.pack = None

    def prepare(self) -> None:
        self.pack = packed_head(self.model.feature_drafter)

    @torch.no_grad()
    def predict(self, capture: HeldoutCapture) -> torch.Tensor:
        fd, out = self.weights.feature_drafter, torch.full((capture.n,), -1, dtype=torch.long)
        for s in dict.fromkeys(capture.seq.tolist()):
            f = capture.h_last[s].to(self.model.device, torch.float32)
            g = fd.teacher_forced(f, capture.ids[s][:f.shape[0]].to(self.model.device))
            ids = top1_ids(self.pack, fd.drafter_head, g, self.model.drafter_vocab)
            mine = (capture.seq == s) & (capture.pos >= 1)
            out[mine] = ids[capture.pos[mine] - 1]
        return out


def window_features(adapter, rotary_emb, capture: HeldoutCapture) -> torch.Tensor:
    """A windowed adapter's features at each position, row by row as ``KangarooModel.shallow_out`` computes them
    at draft time: the adapter's layer over the layer-k rows of the window ending there."""
    w = adapter.norm.weight
    out = []
    for s, p in zip(capture.seq.tolist(), capture.pos.tolist()):
        first = max(0, p - adapter.window + 1)
        rows = capture.h[s][first:p + 1][None].to(w.device, w.dtype)
        cos, sin = rotary_for(rotary_emb, rows, first)
        out.append(adapter.forward_rows(rows, cos, sin, 1)[0, 0])
    return torch.stack(out)


def replayed_features(model, capture: HeldoutCapture) -> torch.Tensor:
    """The model's adapter features at each position, its layer run over each sequence's rows as decoding runs it
    (the prompt but its last row in one pass, then row by row) into a fresh cache."""
    out = []
    for s, h in enumerate(capture.h):
        cache = model.new_caches(h.shape[0]).shallow
        h = h[None].to(model.device, model.dtype)
        first = capture.prompt_lens[s] - 1
        if first:
            model.shallow_out(h[:, :first], cache, 0)
        for p in range(first, h.shape[1]):
            out.append(model.shallow_out(h[:, p:p + 1], cache, p).hk[0, 0])
    return torch.stack(out)
