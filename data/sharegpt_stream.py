"""
Streaming ShareGPT loader.

ShareGPT ships as one big JSON array (~120 MB). We convert it once to JSON Lines
(one conversation per line) with a streaming decoder, then read (prompt, target)
pairs from the jsonl lazily, so memory stays flat however long the file is.

    python -m data.sharegpt_stream --convert IN.json OUT.jsonl
    python -m data.sharegpt_stream --peek 3 OUT.jsonl [--max-src-len L --max-tgt-len L]
"""

import argparse
import itertools
import json
import os
import sys

from common.atomic import atomic_write
from data.json_array import iter_json_array

FIX_HINT = ("create it with `python -m data.sharegpt_stream --convert IN.json OUT.jsonl` "
            "or fetch the assets with `bash scripts/setup.sh`")
STAT_KEYS = ("lines", "conversations", "pairs", "malformed", "empty", "blank")

# -----------------------------------------------------------------------------
# jsonl -> (prompt, target) pairs

def iter_sharegpt_jsonl(path, max_src_len=2048, max_tgt_len=256, stats=None):
    """Yield (prompt_text, target_text) for every human -> gpt exchange in a ShareGPT jsonl.

    Limits are in characters (the loader has no tokenizer). Both texts are stripped of
    surrounding whitespace, then the prompt keeps its TAIL (the end of the question
    matters most) and the target keeps its HEAD (what the model should say first).
    Other roles ("system", ...) are ignored; of consecutive human turns the last one
    before the gpt turn is the prompt; a gpt turn with no human turn before it is dropped.
    Blank lines, malformed lines and exchanges with a blank side are skipped and counted.
    If `stats` is given it is reset to zero and updated live (keys in STAT_KEYS).
    """
    if max_src_len < 1 or max_tgt_len < 1:
        raise ValueError(f"max_src_len/max_tgt_len must be >= 1 (got {max_src_len}/{max_tgt_len}); "
                         "pass positive character limits")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ShareGPT jsonl not found: {path}; {FIX_HINT}")
    st = stats if stats is not None else {}
    st.update(dict.fromkeys(STAT_KEYS, 0))
    try:
        yield from _pairs(path, max_src_len, max_tgt_len, st)
    finally:  # also when the reader stops early (--max-prompts): the skips so far are reported
        line = skip_summary(st, path)
        if line:
            print(line, file=sys.stderr)


def skip_summary(st, path):
    """One line naming what was skipped so far, or None when nothing was."""
    skipped = [f"{st[k]} {label}" for k, label in
               (("malformed", "malformed lines"), ("blank", "blank lines"), ("empty", "empty exchanges")) if st[k]]
    if not skipped:
        return None
    what = ", ".join(skipped[:-1]) + " and " + skipped[-1] if len(skipped) > 1 else skipped[0]
    return f"[sharegpt] {what} skipped in {path} (of {st['lines']} lines read)"


def _pairs(path, max_src_len, max_tgt_len, st):
    with open(path, "rb") as f:  # binary: one bad UTF-8 line must not kill the stream
        for raw in f:
            st["lines"] += 1
            if not raw.strip():
                st["blank"] += 1
                continue
            try:
                rec = json.loads(raw)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                st["malformed"] += 1
                continue
            turns = rec.get("conversations") if isinstance(rec, dict) else None
            if not isinstance(turns, list):
                st["malformed"] += 1
                continue
            st["conversations"] += 1
            human = None
            for turn in turns:
                if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                    continue
                role = turn.get("from")
                if role == "human":
                    human = turn["value"]
                elif role == "gpt" and human is not None:
                    prompt = human.strip()[-max_src_len:]
                    target = turn["value"].strip()[:max_tgt_len]
                    human = None
                    if not prompt or not target:
                        st["empty"] += 1
                        continue
                    st["pairs"] += 1
                    yield prompt, target

# -----------------------------------------------------------------------------
# one big JSON array -> jsonl, streamed

def convert_sharegpt_json(in_path, out_path, chunk_size=1 << 20):
    """Stream the ShareGPT JSON array at in_path into JSON Lines at out_path.

    Keeps every complete record and never writes a partial one; if the array is cut off
    or damaged, prints a WARNING to stderr and returns truncated=True. Elements that are
    valid JSON but not objects are skipped and counted. Writes out_path atomically
    (common.atomic), so an interrupted run never leaves a half-written file.
    Returns {records, skipped, truncated, bad_offset, bytes_left}.
    """
    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"ShareGPT JSON not found: {in_path}; fetch it with `bash scripts/setup.sh`")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    info = {"bad_offset": None, "reason": None}
    records = skipped = 0
    with open(in_path, "rb") as fin, atomic_write(out_path, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        for rec in iter_json_array(fin, chunk_size, info):
            if not isinstance(rec, dict):
                skipped += 1
                continue
            try:
                line = json.dumps(rec, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates (from \ud83d-style escapes): keep them escaped
                line = json.dumps(rec).encode("utf-8")
            fout.write(line + b"\n")
            records += 1
    bad = info["bad_offset"]
    stats = {"records": records, "skipped": skipped, "truncated": bad is not None,
             "bad_offset": bad, "bytes_left": 0 if bad is None else size - bad}
    if bad is not None:
        print(f"WARNING: {in_path}: stopped at byte {bad:,} of {size:,} ({size - bad:,} bytes not converted): "
              f"{info['reason']}; kept the {records:,} complete records before it", file=sys.stderr)
    if skipped:
        print(f"WARNING: {in_path}: skipped {skipped:,} array elements that are not JSON objects", file=sys.stderr)
    return stats

# -----------------------------------------------------------------------------
# CLI

def _clip(s, n=300):
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n // 2] + " ... " + s[-(n // 2):]

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m data.sharegpt_stream", description=__doc__.split("\n\n")[0].strip())
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--convert", nargs=2, metavar=("IN.json", "OUT.jsonl"),
                   help="stream a ShareGPT JSON array into jsonl")
    g.add_argument("--peek", nargs=2, metavar=("N", "PATH.jsonl"), help="print the first N (prompt, target) pairs")
    p.add_argument("--max-src-len", type=int, default=2048, help="prompt limit in characters (keeps the tail)")
    p.add_argument("--max-tgt-len", type=int, default=256, help="target limit in characters (keeps the head)")
    p.add_argument("--chunk-size", type=int, default=1 << 20, help="converter read size in bytes")
    args = p.parse_args(argv)
    try:
        if args.convert:
            src, dst = args.convert
            s = convert_sharegpt_json(src, dst, chunk_size=args.chunk_size)
            cut = " (input truncated, see warning)" if s["truncated"] else ""
            print(f"wrote {s['records']:,} records to {dst}{cut}")
            return 0
        n, path = args.peek
        if not n.isdigit():
            raise ValueError(f"--peek N must be a non-negative integer, got {n!r}; e.g. --peek 3 PATH.jsonl")
        n = int(n)
        it = iter_sharegpt_jsonl(path, args.max_src_len, args.max_tgt_len)
        shown = 0
        for shown, (prompt, target) in enumerate(itertools.islice(it, n), 1):
            print(f"=== pair {shown} ===")
            print(f"[prompt] ({len(prompt)} chars) {_clip(prompt)}")
            print(f"[target] ({len(target)} chars) {_clip(target)}")
        it.close()
        if shown < n:
            print(f"(only {shown} pairs in {path})")
        return 0
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
