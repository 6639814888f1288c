import json
import os
import subprocess
import sys

import pytest

from data.sharegpt_stream import convert_sharegpt_json, iter_sharegpt_jsonl, main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def conv(i, *turns):
    return {"id": f"c{i}", "conversations": [{"from": r, "value": v} for r, v in turns]}


RECORDS = [
    conv(0, ("human", "hi"), ("gpt", "hello")),
    conv(1, ("system", "be nice"), ("human", "Grüße, 世界 🦘?"), ("gpt", "ça va ✓"), ("human", "more"),
         ("gpt", "sure")),
    conv(2, ("gpt", "orphan"), ("human", "q1"), ("human", "q2"), ("gpt", "a2")),
    conv(3),
]


def write_array(path, records, indent=2):
    path.write_text(json.dumps(records, ensure_ascii=False, indent=indent), encoding="utf-8")
    return path


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_jsonl(path, lines):
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


def record_bounds(data):
    """(start, end) byte offsets of each top-level array element, via a plain full parse."""
    text, dec, out, i = data.decode(), json.JSONDecoder(), [], 1
    while True:
        while text[i] in " \n\t\r,":
            i += 1
        if text[i] == "]":
            return out
        _, j = dec.raw_decode(text, i)
        out.append((len(text[:i].encode()), len(text[:j].encode())))
        i = j

# -----------------------------------------------------------------------------
# converter

@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 20])
def test_convert_valid_array(tmp_path, chunk_size, capsys):
    src = write_array(tmp_path / "in.json", RECORDS)
    out = tmp_path / "out.jsonl"
    stats = convert_sharegpt_json(str(src), str(out), chunk_size=chunk_size)
    assert stats == {"records": 4, "skipped": 0, "truncated": False, "bad_offset": None, "bytes_left": 0}
    assert read_jsonl(out) == RECORDS  # includes multi-byte UTF-8 split across 1- and 7-byte chunks
    assert "Grüße, 世界 🦘?" in out.read_text(encoding="utf-8")  # ensure_ascii=False
    assert "WARNING" not in capsys.readouterr().err
    assert set(os.listdir(tmp_path)) == {"in.json", "out.jsonl"}


@pytest.mark.parametrize("chunk_size", [7, 1 << 20])
def test_convert_truncated_array(tmp_path, chunk_size, capsys):
    data = json.dumps(RECORDS, ensure_ascii=False, indent=2).encode()
    start, end = record_bounds(data)[1]
    cut = start + (end - start) // 2  # middle of record 1 (which holds the non-ASCII text)
    src = tmp_path / "in.json"
    src.write_bytes(data[:cut])
    out = tmp_path / "out.jsonl"
    stats = convert_sharegpt_json(str(src), str(out), chunk_size=chunk_size)
    assert stats == {"records": 1, "skipped": 0, "truncated": True, "bad_offset": start, "bytes_left": cut - start}
    assert read_jsonl(out) == RECORDS[:1]
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1  # no partial record
    err = capsys.readouterr().err
    assert err.startswith("WARNING:") and f"stopped at byte {start:,}" in err and "truncated" in err


def test_convert_every_cut_point(tmp_path):
    # cut the file at every byte (also inside multi-byte characters): always exactly the complete records
    recs = RECORDS[:2] + [{"id": "n", "x": [1, 2.5e3, True, None, "\\u00e9 \" \n"]}]
    data = json.dumps(recs, ensure_ascii=False, indent=1).encode()
    bounds = record_bounds(data)
    src, out = tmp_path / "in.json", tmp_path / "out.jsonl"
    for cut in range(1, len(data) + 1):
        src.write_bytes(data[:cut])
        stats = convert_sharegpt_json(str(src), str(out), chunk_size=5)
        done = sum(end <= cut for _, end in bounds)
        assert read_jsonl(out) == recs[:done], cut
        assert stats["truncated"] == (cut < len(data)), cut
        if done < len(recs) and cut > bounds[done][0]:
            assert stats["bad_offset"] == bounds[done][0], cut


def test_convert_skips_non_dict_elements(tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text('[{"a": 1}, 12345, "x", [1], null, {"b": 2}]')
    out = tmp_path / "out.jsonl"
    stats = convert_sharegpt_json(str(src), str(out), chunk_size=3)
    assert stats["records"] == 2 and stats["skipped"] == 4 and not stats["truncated"]
    assert read_jsonl(out) == [{"a": 1}, {"b": 2}]
    assert "not JSON objects" in capsys.readouterr().err


def test_convert_lone_surrogate_stays_escaped(tmp_path):
    src = tmp_path / "in.json"
    src.write_text('[{"v": "bad \\ud83d emoji"}, {"v": "ok \\ud83e\\udd98"}]')
    out = tmp_path / "out.jsonl"
    assert convert_sharegpt_json(str(src), str(out))["records"] == 2
    lines = out.read_bytes().decode("utf-8").splitlines()  # still valid UTF-8
    assert "\\ud83d" in lines[0] and lines[1] == '{"v": "ok \U0001f998"}'
    assert [json.loads(l)["v"] for l in lines] == ["bad \ud83d emoji", "ok \U0001f998"]


def test_convert_damage_mid_file_stops_early(tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text('[{"a": 1}, {"a": tru}, ' + '{"b": 2}, ' * 1000 + '{"c": 3}]')
    stats = convert_sharegpt_json(str(src), str(tmp_path / "out.jsonl"), chunk_size=64)
    assert stats["records"] == 1 and stats["truncated"] and stats["bad_offset"] == 11
    assert "invalid JSON" in capsys.readouterr().err


def test_convert_rerun_overwrites(tmp_path):
    src = write_array(tmp_path / "in.json", RECORDS)
    out = tmp_path / "out.jsonl"
    out.write_text("stale\n" * 100)
    convert_sharegpt_json(str(src), str(out))
    convert_sharegpt_json(str(src), str(out))
    assert read_jsonl(out) == RECORDS
    assert set(os.listdir(tmp_path)) == {"in.json", "out.jsonl"}  # no temp files left behind


@pytest.mark.parametrize("content", ['{"id": 1}\n{"id": 2}\n', "", "   \n", "hello"])
def test_convert_rejects_non_array(tmp_path, content):
    src = tmp_path / "in.json"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="JSON array"):
        convert_sharegpt_json(str(src), str(out))
    assert not out.exists() and os.listdir(tmp_path) == ["in.json"]


def test_convert_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/setup.sh"):
        convert_sharegpt_json(str(tmp_path / "nope.json"), str(tmp_path / "out.jsonl"))

# -----------------------------------------------------------------------------
# jsonl reader

def test_iter_pairs_multi_turn(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(r, ensure_ascii=False) for r in RECORDS])
    stats = {"stale": 1, "pairs": 99}
    pairs = list(iter_sharegpt_jsonl(str(path), stats=stats))
    assert pairs == [("hi", "hello"), ("Grüße, 世界 🦘?", "ça va ✓"), ("more", "sure"), ("q2", "a2")]
    assert stats["pairs"] == 4 and stats["conversations"] == 4 and stats["lines"] == 4
    assert stats["malformed"] == stats["empty"] == stats["blank"] == 0
    assert capsys.readouterr().err == ""  # nothing skipped -> no summary line


def test_iter_skips_and_counts_bad_lines(tmp_path, capsys):
    good = json.dumps(RECORDS[0])
    lines = [
        good,
        "",                                              # blank
        "{not json",                                     # invalid JSON
        "[1, 2]",                                        # not a dict
        '{"id": "x"}',                                   # no conversations
        '{"id": "x", "conversations": "oops"}',          # conversations not a list
        json.dumps(conv(5, ("human", "   "), ("gpt", "answer"))),      # blank prompt
        json.dumps(conv(6, ("human", "question"), ("gpt", "\n"))),     # blank target
        good,
    ]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    stats = {}
    pairs = list(iter_sharegpt_jsonl(str(path), stats=stats))
    assert pairs == [("hi", "hello")] * 2
    assert stats == {"lines": 9, "conversations": 4, "pairs": 2, "malformed": 4, "empty": 2, "blank": 1}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"[sharegpt] 4 malformed lines, 1 blank lines and 2 empty exchanges skipped in {path} "
                   "(of 9 lines read)"]


def test_iter_invalid_utf8_line_is_malformed(tmp_path):
    path = tmp_path / "d.jsonl"
    bad_utf8 = b'{"conversations": [{"from": "human", "value": "\xff"}]}\n'
    path.write_bytes(bad_utf8 + json.dumps(RECORDS[0]).encode() + b"\n")
    stats = {}
    assert list(iter_sharegpt_jsonl(str(path), stats=stats)) == [("hi", "hello")]
    assert stats["malformed"] == 1


def test_iter_truncation_keeps_prompt_tail_and_target_head(tmp_path):
    prompt, target = "A" * 50 + "the question?", "the answer" + "B" * 50
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(conv(0, ("human", prompt), ("gpt", target)))])
    [(p, t)] = iter_sharegpt_jsonl(str(path), max_src_len=13, max_tgt_len=10)
    assert p == "the question?" and t == "the answer"


def test_iter_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError) as e:
        next(iter_sharegpt_jsonl(str(missing)))
    msg = str(e.value)
    assert str(missing) in msg and "--convert IN.json OUT.jsonl" in msg and "scripts/setup.sh" in msg


def test_iter_bad_limits(tmp_path):
    with pytest.raises(ValueError, match="max_src_len"):
        next(iter_sharegpt_jsonl(str(tmp_path / "x.jsonl"), max_src_len=0))

# -----------------------------------------------------------------------------
# CLI

def test_cli_convert_then_peek(tmp_path, capsys):
    src = write_array(tmp_path / "in.json", RECORDS)
    out = tmp_path / "out.jsonl"
    assert main(["--convert", str(src), str(out)]) == 0
    assert "wrote 4 records" in capsys.readouterr().out
    assert main(["--peek", "2", str(out), "--max-tgt-len", "3"]) == 0
    text = capsys.readouterr().out
    assert "=== pair 1 ===" in text and "=== pair 2 ===" in text and "=== pair 3 ===" not in text
    assert "[prompt] (2 chars) hi" in text and "[target] (3 chars) hel" in text


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["--peek", "3", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--convert" in err
    assert main(["--convert", str(tmp_path / "nope.json"), str(tmp_path / "o.jsonl")]) == 2
    assert main(["--peek", "x", str(tmp_path / "nope.jsonl")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["--convert", str(bad), str(tmp_path / "o.jsonl")]) == 2
    assert "not a JSON array" in capsys.readouterr().err


def test_cli_subprocess_peek(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(r, ensure_ascii=False) for r in RECORDS])
    r = subprocess.run([sys.executable, "-m", "data.sharegpt_stream", "--peek", "1", str(path)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "=== pair 1 ===" in r.stdout and "Traceback" not in r.stderr
