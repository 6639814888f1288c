"""One big JSON array, streamed element by element in constant memory (the ShareGPT dump is ~120 MB).

    for rec in iter_json_array(f, chunk_size, out): ...     # f: a binary file; out: where decoding stopped, and why

Every complete element is yielded; a damaged or truncated array stops at the last complete element and ``out`` says
where (byte offset) and why, so the caller can keep what came before and report the rest in one line.
"""

import codecs
import json
import re


_WS = re.compile(r"[ \t\n\r]*")

def _damaged(err, n):
    # Is this decode error real damage rather than "the record continues past the buffer end"?
    # A cut inside a string reports the string's start, so it could be anywhere; any other
    # cut is reported within a few chars of the end (partial literal, escape or number).
    if err.msg.startswith("Unterminated string"):
        return False
    return err.pos < n - 16 or err.msg.startswith(("Invalid control character", "Invalid \\escape"))

def _msg(err):
    return err.msg.removesuffix(" at").removesuffix(" starting")

class _BadData(Exception):
    """Decoding stopped at byte ``offset`` of the file, for ``reason``."""

    def __init__(self, offset, reason):
        super().__init__(reason)
        self.offset, self.reason = offset, reason


_MORE = object()  # a step needs more input before it can go on


def iter_json_array(f, chunk_size, out):
    """Yield the elements of the JSON array in binary file `f`, reading `chunk_size` bytes at a time.
    On return `out` holds: bad_offset (byte offset where decoding stopped, None if clean), reason."""
    reader = _ArrayReader(f, chunk_size)
    try:
        while True:
            yield from reader.scan()
            if reader.eof:
                reader.finish()
                return
            reader.refill()
    except _BadData as e:
        out.update(bad_offset=e.offset, reason=e.reason)


class _ArrayReader:
    """The state of one streamed array: decoded text ``buf`` not yet consumed from ``pos`` on, and where the
    parser is: open -> first -> (sep -> value)* -> closed."""

    def __init__(self, f, chunk_size):
        self.f, self.chunk_size = f, chunk_size
        self.dec_utf8 = codecs.getincrementaldecoder("utf-8")()
        self.decoder = json.JSONDecoder()
        self.buf, self.pos = "", 0   # decoded text not yet consumed starts at buf[pos]
        self.base = 0                # byte offset of buf[0] in the file
        self.read = 0                # bytes read so far
        self.wait = 0                # don't retry a failed decode until this many chars are pending (amortised O(n))
        self.eof, self.utf8_err = False, None
        self.state = "open"

    def offset(self, i=None):
        """Byte offset in the file of ``buf[i]`` (default: ``buf[pos]``)."""
        return self.base + len(self.buf[:self.pos if i is None else i].encode())

    def scan(self):
        """Parse as much of ``buf`` as can be, yielding each element."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos == len(self.buf):
                return
            c = self.buf[self.pos]
            if self.state == "open":
                self._open(c)
            elif self.state == "sep":
                self._separator(c)
            elif self.state == "closed":
                raise _BadData(self.offset(), "trailing data after the closing ']'")
            elif c == "]":  # empty array, or (leniently) a trailing comma
                self.pos, self.state = self.pos + 1, "closed"
            else:  # first / value
                obj = self._value()
                if obj is _MORE:
                    return
                yield obj

    def _open(self, c):
        if c == "\ufeff" and self.base == 0 and self.pos == 0:  # UTF-8 BOM
            self.pos += 1
            return
        if c != "[":
            hint = "; it looks like JSON Lines already, read it with iter_sharegpt_jsonl" if c == "{" else ""
            raise ValueError(f"{self.f.name} is not a JSON array (starts with {c!r}, expected '['){hint}")
        self.pos, self.state = self.pos + 1, "first"

    def _separator(self, c):
        if c not in ",]":
            raise _BadData(self.offset(), f"expected ',' or ']' but found {c!r}")
        self.pos, self.state = self.pos + 1, ("value" if c == "," else "closed")

    def _value(self):
        """The element at ``pos``, or _MORE when it may continue past the text read so far."""
        buf, pos = self.buf, self.pos
        if len(buf) - pos < self.wait and not self.eof:
            return _MORE
        try:
            obj, end = self.decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            broken = _damaged(e, len(buf))
            if self.eof or broken:
                raise _BadData(self.offset(), self._failure(e, broken)) from None
            self.wait = 2 * (len(buf) - pos)
            return _MORE
        if end == len(buf) and not self.eof:  # a bare number may continue in the next chunk
            self.wait = len(buf) - pos + 1
            return _MORE
        self.wait = 0
        self.pos, self.state = end, "sep"
        return obj

    def _failure(self, e, broken):
        if broken:
            return f"invalid JSON in the record that starts there: {_msg(e)} at byte {self.offset(e.pos)}"
        if self.utf8_err is not None:
            return f"invalid UTF-8 at byte {self.utf8_err}"
        return f"the file is truncated inside the record that starts there ({_msg(e)})"

    def finish(self):
        """At the end of the file: the array must have been opened and closed."""
        if self.state == "open":
            raise ValueError(f"{self.f.name} is empty or not text, expected a JSON array starting with '['")
        if self.state != "closed":
            raise _BadData(self.offset(), f"invalid UTF-8 at byte {self.utf8_err}" if self.utf8_err is not None
                           else "the file is truncated before the closing ']'")

    def refill(self):
        """Drop the consumed prefix, then read until at least ``wait`` chars are pending (one join, no repeated
        concatenation, so tiny chunks and huge records stay linear)."""
        self.base += len(self.buf[:self.pos].encode())
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        while True:
            text = self._read_chunk()
            parts.append(text)
            have += len(text)
            if self.eof or have >= self.wait:
                break
        self.buf, self.pos = "".join(parts), 0

    def _read_chunk(self):
        chunk = self.f.read(self.chunk_size)
        pending = self.dec_utf8.getstate()[0]
        try:
            text = self.dec_utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:  # keep the valid prefix, stop at the bad byte
            if chunk:  # (at EOF it is just a character cut in half: plain truncation)
                self.utf8_err = self.read - len(pending) + e.start
            text = e.object[:e.start].decode("utf-8")
            self.eof = True
        self.read += len(chunk)
        self.eof = self.eof or not chunk
        return text
