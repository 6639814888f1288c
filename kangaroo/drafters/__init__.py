"""The drafter seam: who proposes the tokens a block verifies. One interface (``base.Drafter``), four drafters,
and an ordered chain of them, cheap first (llama.cpp ``common/speculative.h`` style):

  self     SelfDrafter    shallow layers + the drafter head (identity, pruned or LoRA), Kangaroo's drafter
  ngram    NGramDrafter   prompt lookup over the sequence's own prompt + output
  memory   MemoryDrafter  lookup over the outputs of earlier requests of the run (a shared, bounded SuffixMemory)
  feature  FeatureDrafter one decoder layer over the verifier's own last-layer features (EAGLE-1), runs no layer
                          of the model: it may stand before self
  a,b,c    DrafterChain   the first drafter whose draft keeps a token wins the block (``hybrid`` = ngram,self)

Every drafter's block goes through the same verify/accept, so every one is lossless. DVI trains the self-drafter's
head and the feature drafter from the verifier's rows: see docs/dvi.md. Each drafter counts what it did
(``counters``); a chain keeps them per source (``DrafterChain.by_source``).
"""
from __future__ import annotations

from typing import Callable

from kangaroo.draft_policy import DraftPolicy
from kangaroo.drafters.base import Drafter
from kangaroo.drafters.chain import ALIASES, NAMES, DrafterChain, chain_names
from kangaroo.drafters.counters import DrafterCounters
from kangaroo.drafters.feature import FeatureDrafter
from kangaroo.drafters.memory import MemoryDrafter
from kangaroo.drafters.ngram import NGramDrafter, NGramIndex
from kangaroo.drafters.self_drafter import SelfDrafter
from kangaroo.drafters.suffix_memory import SuffixMemory

__all__ = ["ALIASES", "NAMES", "Drafter", "DrafterChain", "DrafterCounters", "FeatureDrafter", "MemoryDrafter",
           "NGramDrafter", "NGramIndex", "SelfDrafter", "SuffixMemory", "chain_names", "make_drafter"]


def make_drafter(spec: str, steps: int, policy_factory: Callable[[], DraftPolicy], ngram_min: int = 1,
                 ngram_max: int = 3, memory: SuffixMemory | None = None, width: int = 1) -> DrafterChain:
    """The chain ``spec`` names (``chain_names``). ``policy_factory()`` builds one policy per drafter (each
    calibrates apart); ``memory``: the shared store of the memory drafter (default: a new one); ``width``: each
    drafter's tree width (1: chains; the feature drafter drafts chains)."""
    parts = {"self": lambda: SelfDrafter(steps, policy_factory(), width),
             "ngram": lambda: NGramDrafter(steps, ngram_min, ngram_max, policy_factory(), width),
             "memory": lambda: MemoryDrafter(steps, memory, policy_factory(), width),
             "feature": lambda: FeatureDrafter(steps, policy_factory())}  # chains only
    return DrafterChain([parts[name]() for name in chain_names(spec)])
