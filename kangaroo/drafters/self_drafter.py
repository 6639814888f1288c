"""The self-drafter: the shallow layers and the drafter head (identity, pruned or LoRA), Kangaroo's drafter. Its
draft carries the layer-k hidden states and hk, so verify runs only the deep layers; it writes the shallow cache
while drafting, so a chain asks it last."""
from __future__ import annotations

from kangaroo.blocks import Draft
from kangaroo.draft_policy import DraftPolicy, ThresholdStop
from kangaroo.drafters.base import Drafter
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.early_exit import self_draft


class SelfDrafter(Drafter):
    name = "self"
    runs_model = True

    def __init__(self, steps: int = 6, policy: DraftPolicy | None = None, width: int = 1):
        super().__init__(steps, policy if policy is not None else ThresholdStop(0.6), width)

    def draft(self, model: KangarooModel, caches: KangarooCaches, history: list[int]) -> Draft:
        if not self.policy.probe("self"):  # not worth a head projection now: a plain greedy step
            return Draft([], None, None, [], source="self", last_token=history[-1])
        return self_draft(model, history[-1], caches, self.steps, self.policy, self.sampling, self.width)

    def trainable_params(self, model: KangarooModel) -> list:
        from kangaroo.drafter_head import trainable_params

        return trainable_params(model)
