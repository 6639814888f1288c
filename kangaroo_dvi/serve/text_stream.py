"""Generated token ids -> the text a client sees, block by block: decode everything so far, send only what can no
longer change, stop at a stop string.

Held back until later blocks settle it: an incomplete UTF-8 character at the end (the tokenizer shows it as
U+FFFD) and an ending that is the start of a stop string. When a stop string appears, the text ends before it and
decoding of that request stops. At the end whatever is left is sent, so the concatenated deltas are exactly the
final text: ``tokenizer.decode(tokens, skip_special_tokens=True)``, cut before the first stop string.
"""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer, self.stop = tokenizer, list(stop or [])
        self.sent = ""          # the text sent so far (a prefix of the final text)
        self.stopped = False    # a stop string was found: the text is final

    def update(self, tokens: list[int], final: bool = False) -> str:
        """The new text to send after ``tokens`` (all generated so far); ``final``: no more tokens will come."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = self._stop_at(text)
        if cut is not None:
            text, final, self.stopped = text[:cut], True, True
        if not final:
            text = text.rstrip("\ufffd")
            text = text[:len(text) - self._held(text)]
        if not text.startswith(self.sent):  # a decoder that rewrote earlier text: wait for the end
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def _stop_at(self, text: str) -> int | None:
        """Where the first stop string starts (searching only where a new one can be), or None."""
        if not self.stop:
            return None
        lo = max(0, len(self.sent) - max(map(len, self.stop)))
        hits = [i for i in (text.find(s, lo) for s in self.stop) if i >= 0]
        return max(min(hits), len(self.sent)) if hits else None

    def _held(self, text: str) -> int:
        """Length of the longest ending of ``text`` that a stop string starts with (it may yet become one)."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
