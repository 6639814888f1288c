"""One request while the server decodes it: its tokens, its sampling params, its caches and drafter (assigned when it
gets a slot), its stop conditions (EOS, max_tokens, stop strings), and the events it sends back to the HTTP handler.

The decode thread owns everything here but ``cancel()`` (any thread: a client that went away). Events go to
``sink`` (the handler's thread-safe queue): ``Event("delta", text, token_ids)`` after each block that added text or
tokens, then one ``done`` (with ``finish_reason`` and usage) or ``error``.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kangaroo.greedy import clip_at_stop
from kangaroo.sampling import GREEDY, SamplingParams
from kangaroo_dvi.serve.text_stream import TextStream

_ids = itertools.count(1)


@dataclass
class Event:
    kind: str                        # "delta" | "done" | "error"
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None   # done: "stop" (EOS or a stop string) or "length" (max_tokens)
    usage: dict | None = None          # done: prompt_tokens, completion_tokens, total_tokens
    status: int = 500                     # error: the HTTP status it stands for


@dataclass(eq=False)  # identity: the scheduler finds a request in its lists by the object itself
class Sequence:
    prompt: torch.Tensor             # [1, n] token ids
    max_tokens: int
    text: TextStream
    sink: Callable[[Event], None]
    eos: set[int] = field(default_factory=set)
    sampling: SamplingParams = GREEDY   # its drafter's (``sample_with``): greedy, or plain sampling's with its seed
    rid: int = field(default_factory=lambda: next(_ids))
    arrived: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    tokens: list[int] = field(default_factory=list)
    accept_lengths: list[int] = field(default_factory=list)
    history: list[int] = field(default_factory=list)
    drafter: object = None           # set when the request gets a slot
    caches: object = None
    slot: int | None = None
    finish_reason: str | None = None
    cancelled: bool = False

    @property
    def prompt_len(self) -> int:
        return self.prompt.shape[1]

    def cancel(self) -> None:
        """The client went away: the decode thread drops this request at the next block boundary."""
        self.cancelled = True

    def commit(self, committed: list[int]) -> bool:
        """Add a block's committed tokens; send what is new; return whether the request is finished."""
        n = len(self.tokens)
        self.tokens, stop = clip_at_stop(self.tokens + committed, self.eos, self.max_tokens)
        new = self.tokens[n:]
        self.history.extend(new)
        self.accept_lengths.append(len(new))
        if self.first_token_at is None and new:
            self.first_token_at = time.perf_counter()
        delta = self.text.update(self.tokens, final=stop)
        if self.text.stopped or stop:
            self.finish_reason = "stop" if self.text.stopped or self.tokens[-1] in self.eos else "length"
        if delta or new:
            self.sink(Event("delta", delta, new))
        return self.finish_reason is not None

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_len, "completion_tokens": len(self.tokens),
                "total_tokens": self.prompt_len + len(self.tokens)}

    def done(self) -> None:
        self.sink(Event("done", finish_reason=self.finish_reason, usage=self.usage()))

    def fail(self, message: str, status: int = 500) -> None:
        self.sink(Event("error", message, status=status))
