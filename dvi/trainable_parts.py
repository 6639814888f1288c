"""What DVI trains, one part per trainable drafter, behind one protocol: the trainer, its thread, the checkpoints and
the published weights handle every part alike.

    name               "self" | "feature": its checkpoint section, its columns' prefix in trainer.csv
    drafter_head       the LoRA head its logits come from (``kangaroo.drafter_head.DrafterHead``)
    drafter_vocab      the [N] ids of the pruned head's columns (None: all V)
    select(batch)      the buffer's tuples it trains on, as it reads them
    head_input(batch)  [n, d] what its head projects for those tuples, differentiable in its tensors
    autocast()         the context its forward runs in (the feature drafter's: bfloat16 where native)
    params()           its trained tensors, in a fixed order (its optimizer's; ``tensors`` names them)

    SelfPart      the self-drafter: the LoRA head over the stored hk, or over a trained adapter's output on each
                  tuple's segment (``dvi/segment_features.py``)
    FeaturePart   the feature drafter (``kangaroo/feature_drafter.py``): its layer over each tuple's feature
                  segment, teacher-forced (the TRUE features of the entries before), then its own LoRA head. Its
                  tuples carry no verdict of its own (the verdicts are the drafted tokens' of whoever drafted), so it
                  trains on the KD terms and top-1 distillation of every row: CE and PG on teacher-forced rows would
                  only reweight the verifier's token, which top-1 distillation trains on every row

A model (or a trainer's ``ShadowDrafter``) has the parts ``parts_of`` lists; ``published_tensors`` is every part's
tensors in one list, what the trainer thread publishes and the decode thread adopts.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from dvi.segment_features import segment_features
from dvi.types import Batch
from kangaroo.drafter_head import TrainableDrafter, trainable_params
from kangaroo.feature_drafter import feature_tensors


class SelfPart:
    name = "self"

    def __init__(self, drafter: TrainableDrafter):
        if drafter.drafter_head is None:
            raise ValueError("the drafter has no trainable head: attach the drafter head before training")
        self.drafter = drafter
        self.drafter_head, self.drafter_vocab = drafter.drafter_head, drafter.drafter_vocab
        self.adapter, self.rotary_emb = drafter.trained_adapter, drafter.rotary_emb

    def select(self, batch: Batch) -> Batch:
        return batch

    def autocast(self):
        return contextlib.nullcontext()

    def head_input(self, batch: Batch) -> torch.Tensor:
        """The stored hk, or the trained adapter over each tuple's segment."""
        if self.adapter is None:
            return batch.hk.to(device=self.drafter_head.weight_device, dtype=self.drafter_head.weight_dtype)
        if batch.seg_h is None:
            raise ValueError("the drafter trains an adapter but the batch holds no segments: build the buffer with "
                             "segment_window = the adapter's window")
        return segment_features(self.adapter, self.rotary_emb, batch)

    def params(self) -> list:
        return trainable_params(self.drafter)


class FeaturePart:
    name = "feature"

    def __init__(self, fd, bf16: bool = False):
        """``bf16``: its forward in bfloat16 autocast where the hardware computes it natively (``bf16_autocast``)."""
        self.fd = fd
        self.drafter_head, self.drafter_vocab = fd.drafter_head, fd.drafter_vocab
        self.bf16 = bf16

    def autocast(self):
        return bf16_autocast(self.fd.device) if self.bf16 else contextlib.nullcontext()

    def select(self, batch: Batch) -> Batch:
        """The tuples with a segment (all but a sequence's first position), every one KD-only for this part."""
        if batch.feat_len is None:
            raise ValueError("the drafter trains a feature drafter but the batch holds no feature segments: build "
                             "the buffer with feature_window = the feature drafter's window")
        sub = batch.subset(batch.feat_len > 0)
        sub.kd_only = torch.ones_like(sub.kd_only)
        return sub

    def head_input(self, batch: Batch) -> torch.Tensor:
        return self.fd.segment_outputs(batch.feat_f, batch.feat_ids, batch.feat_len, batch.feat_pos)

    def params(self) -> list:
        return list(feature_tensors(self.fd).values())


def bf16_autocast(device: torch.device):
    """bfloat16 autocast on a device that computes it natively (a CUDA GPU; a CPU with AVX-512 BF16 or AMX, where
    oneDNN's bf16 matmuls run ~1.8x the float32 ones in the feature drafter's step); else a no-op."""
    native = device.type == "cuda" or (device.type == "cpu" and torch.backends.mkldnn.is_available()
                                       and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if native else contextlib.nullcontext()


def as_part(drafter):
    """A part as is; a ``TrainableDrafter`` (a model or a shadow) as its self-drafter's part."""
    return drafter if hasattr(drafter, "head_input") else SelfPart(drafter)


def parts_of(drafter, feature_bf16: bool = False) -> list:
    """The parts of a model or shadow: its self-drafter's (when it has a LoRA head), its feature drafter's (when
    attached; ``feature_bf16``: its step in bfloat16 where native)."""
    fd = getattr(drafter, "feature_drafter", None)
    return (([SelfPart(drafter)] if drafter.drafter_head is not None else [])
            + ([FeaturePart(fd, feature_bf16)] if fd is not None else []))


def published_tensors(drafter) -> list:
    """Every part's trained tensors, in a fixed order: the self-drafter's, then the feature drafter's."""
    return trainable_params(drafter) + list(feature_tensors(getattr(drafter, "feature_drafter", None)).values())


def shadow_feature_drafter(fd):
    """A copy of the feature drafter a trainer thread updates: its own net and LoRA tensors, the frozen head rows
    shared (read-only), the model's embedding and rotary embedding shared."""
    if fd is None:
        return None
    out = copy.copy(fd)   # a shallow copy: same frozen parts; then its own trained ones
    out._modules = dict(fd._modules)
    out.net = copy.deepcopy(fd.net).requires_grad_(True)
    out.drafter_head = fd.drafter_head.shadow()
    out.packed_head = None
    return out
