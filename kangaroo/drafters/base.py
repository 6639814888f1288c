"""The drafter interface (llama.cpp ``common/speculative.h`` style: drafters behind one interface, chained
cheap-first by ``DrafterChain``, each with its own counters).

    sample_with(params)            the sequence's ``SamplingParams`` (before ``begin``; default greedy): the
                                   self-drafter proposes under them, and the block is verified under them
    begin(prompt)                  a new sequence starts (token ids of the prompt)
    draft(model, caches, history)  -> Draft; history[-1] is x, the last committed token, in no cache yet
    observe(block)                 what the verifier made of the last block (the policy calibrates from it)
    end(output)                    the sequence ended with these new tokens (the memory drafter keeps them)
    trainable_params(model)        what DVI may train (only the self-drafter has any)
    metadata()                     settings, for run records

A draft may be a token tree (``width`` > 1: ``Draft.tree``, grown by ``kangaroo/tree_growth.py`` under the draft
policy's pay rule), at most ``steps`` nodes; every drafter's tree goes through the same verify.

Every drafter has its own draft policy (``kangaroo/draft_policy.py``: it decides token by token what joins the
block) and its own ``DrafterCounters`` (``counters``), which the chain that asks it keeps.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from kangaroo.blocks import Block, Draft
from kangaroo.draft_policy import DraftPolicy, ThresholdStop
from kangaroo.drafters.counters import DrafterCounters
from kangaroo.kangaroo_model import KangarooCaches, KangarooModel
from kangaroo.sampling import GREEDY, SamplingParams


class Drafter(ABC):
    name: str = "drafter"
    runs_model: bool = False   # drafts through the model's layers (writes the caches): last in a chain
    sampling: SamplingParams = GREEDY   # the sequence's (``sample_with``); a drafter that ignores it stays lossless

    def __init__(self, steps: int, policy: DraftPolicy | None = None, width: int = 1):
        if steps < 1:
            raise ValueError(f"a drafter drafts at least 1 token per block, got steps={steps}")
        if width < 1:
            raise ValueError(f"a drafter's tree width is at least 1 (a chain), got width={width}")
        self.steps = steps
        self.width = width   # at most this many children a node of its draft (1: chains); a tree has <= steps nodes
        self.policy: DraftPolicy = policy if policy is not None else ThresholdStop(0.0)
        self.counters = DrafterCounters()

    def sample_with(self, params: SamplingParams) -> None:
        """The sequence's sampling params: what verify picks under, and what a drafter that models the verifier
        proposes under (a lookup proposes its token as ever); its policy calibrates per temperature."""
        self.sampling = params
        tell = getattr(self.policy, "sample_with", None)
        if tell is not None:
            tell(params)

    def begin(self, prompt: list[int]) -> None:
        pass

    @abstractmethod
    def draft(self, model: KangarooModel, caches: KangarooCaches, history: list[int]) -> Draft: ...

    def observe(self, block: Block) -> None:
        note = getattr(self.policy, "note", None)  # every block: what a probe gate knows before the next probe
        if note is not None:
            note(block)
        if block.draft.source == self.name:
            self.policy.observe(block)

    def observe_declined(self, token: int, conf: float, verifier_token: int) -> None:
        """A first candidate this drafter proposed and its policy declined, judged by the verifier's v_0 of a
        block another drafter made: the policy keeps calibrating."""
        self.policy.observe_candidate(conf, token == verifier_token, self.name)

    def end(self, output: list[int]) -> None:
        pass

    def trainable_params(self, model: KangarooModel) -> list:
        return []

    def metadata(self) -> dict:
        return {"drafter": self.name, "steps": self.steps, "policy": self.policy.name, "tree_width": self.width}
