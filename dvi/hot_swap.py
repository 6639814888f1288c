"""The drafter side of the sidecar loop: adopt a newer drafter version at a block boundary.

``HotSwap(model, folder).on_block`` is a ``kangaroo_generate`` hook: after a block is committed, and before the next
one drafts, it looks for a newer version in ``folder`` (``dvi/drafter_versions.py``) and loads it into the live
drafter in place (deploy mode: the LoRA tensors and a trained adapter's; every check of ``dvi.checkpoint.load_ckpt``
first). The verifier never changes, so no output token can. A serving engine does the same through its weight-update
endpoint (docs/scale.md).
"""
from __future__ import annotations

from dvi.checkpoint import load_ckpt
from dvi.drafter_versions import latest_version


class HotSwap:
    def __init__(self, model, folder, every: int = 1, version: int = 0):
        """Look every ``every`` blocks; ``version``: the one in use (0: none yet)."""
        self.model, self.folder, self.every, self.version = model, folder, max(1, every), version
        self.blocks = 0
        self.swaps: list[tuple[int, int]] = []  # (block count, version adopted after it)

    def on_block(self, blk=None) -> bool:
        self.blocks += 1
        if self.blocks % self.every:
            return False
        newest = latest_version(self.folder)
        if newest is None or newest[0] <= self.version:
            return False
        load_ckpt(newest[1], self.model, None, None)
        self.version = newest[0]
        self.swaps.append((self.blocks, self.version))
        return True
