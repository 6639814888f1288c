"""Response bodies in the OpenAI API's shapes: chat completions and text completions, whole or streamed as
server-sent events (``data: {chunk}`` lines, then ``data: [DONE]``), as the ``openai`` client reads them.

With ``return_token_ids`` (an extension) each choice, and each streamed chunk, also carries the generated token
ids (``token_ids``), so a client can check the answer token for token against plain sampling or greedy decoding.

Every body, and every streamed chunk, carries ``seed`` (an extension, at the top level): the sampling seed the
answer was decoded with, the request's or the one the server drew; sending it back with the same parameters
reproduces the answer token for token (at temperature 0 it changes nothing).
"""
from __future__ import annotations

import json
import time
import uuid

DONE = "data: [DONE]\n\n"


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class Shape:
    """The response of one request: ``chat`` (chat.completion) or not (text_completion)."""

    def __init__(self, chat: bool, model: str, token_ids: bool = False, seed: int | None = None):
        self.chat, self.model, self.token_ids, self.seed = chat, model, token_ids, seed
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list, **more) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices,
                "seed": self.seed, **more}

    def _choice(self, key: str, value, finish, ids) -> dict:
        c = {"index": 0, key: value, "logprobs": None, "finish_reason": finish}
        if self.token_ids and ids is not None:
            c["token_ids"] = list(ids)
        return c

    def body(self, text: str, finish: str, usage: dict, ids: list[int]) -> dict:
        """The whole response (not streamed)."""
        if self.chat:
            choice = self._choice("message", {"role": "assistant", "content": text}, finish, ids)
        else:
            choice = self._choice("text", text, finish, ids)
        return self._envelope("chat.completion" if self.chat else "text_completion", [choice], usage=usage)

    def chunk(self, text: str, finish=None, ids=None, first: bool = False) -> dict:
        """One streamed chunk: new text (and token ids), or the last one with ``finish``."""
        if not self.chat:
            return self._envelope("text_completion", [self._choice("text", text, finish, ids)])
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text or ids else {})
        return self._envelope("chat.completion.chunk", [self._choice("delta", delta, finish, ids)])

    def usage_chunk(self, usage: dict) -> dict:
        """``stream_options.include_usage``: the last chunk, no choices, the usage."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._envelope(obj, [], usage=usage)
