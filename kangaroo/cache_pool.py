"""One set of Kangaroo KV caches kept across prompts, so a long run does not allocate (and, on a GPU, fragment)
two caches per prompt: ``get(n)`` hands back the same caches reset to length 0 while they hold ``n`` positions,
and allocates larger ones (rounded up) only when a prompt needs more."""
from __future__ import annotations


class ReusableCaches:
    def __init__(self, model, round_to: int = 256):
        self.model, self.round_to = model, round_to
        self.caches = None
        self.allocations = 0

    @property
    def max_len(self) -> int:
        return 0 if self.caches is None else self.caches.shallow.max_len

    def get(self, max_len: int):
        """Caches of at least ``max_len`` positions, empty (length 0)."""
        if max_len > self.max_len:
            self.caches = None  # drop the old ones before allocating the new
            size = -(-max_len // self.round_to) * self.round_to
            self.caches = self.model.new_caches(size)
            self.allocations += 1
        else:
            self.caches.crop(0)
        return self.caches
