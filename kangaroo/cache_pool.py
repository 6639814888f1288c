"""One set of KV caches kept across prompts, so a long run does not allocate (and, on a GPU, fragment) caches per
prompt: ``get(n)`` hands back the same caches reset to length 0 while they hold ``n`` positions, and allocates
larger ones (rounded up) only when a prompt needs more. ``new_caches(max_len)`` makes them: a KangarooModel's
``new_caches`` (shallow + deep), or ``greedy_cache_factory(lm)`` for the greedy loop."""
from __future__ import annotations


class ReusableCaches:
    def __init__(self, new_caches, round_to: int = 256):
        self.new_caches, self.round_to = new_caches, round_to
        self.caches = None
        self.max_len = 0
        self.allocations = 0

    def get(self, max_len: int):
        """Caches of at least ``max_len`` positions, empty (length 0)."""
        if max_len > self.max_len:
            self.caches = None  # drop the old ones before allocating the new
            size = -(-max_len // self.round_to) * self.round_to
            self.caches = self.new_caches(size)
            self.max_len = size
            self.allocations += 1
        else:
            self.caches.crop(0)
        return self.caches


def greedy_cache_factory(lm):
    """``new_caches`` for ``kangaroo.greedy.greedy_decode``: one cache over all of ``lm``'s layers."""
    from kangaroo.llama_forward import new_cache

    return lambda max_len: new_cache(lm.config, lm.config.num_hidden_layers, max_len, lm.dtype, lm.device)
