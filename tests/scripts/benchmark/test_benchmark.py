"""python -m scripts.benchmark: end to end on the tiny model folder, and its pure table/plot builders on hand-made
records."""
import json

import pytest
import torch

from scripts.benchmark import cli as bm
from scripts.benchmark import cli as bcli, methods as bmeth, report as brep, spec_bench as sb, store as bstore

V = 49152  # the tiny folder keeps the real tokenizer's vocabulary


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def qfile(tmp_path):
    return write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": 1, "category": "writing", "turns": ["Write a haiku about the sea.", "Now a limerick."]},
        {"question_id": 2, "category": "writing", "turns": ["Describe a cat."]},
        {"question_id": 3, "category": "qa", "turns": ["What is the capital of France?"]}])


@pytest.fixture
def lora(tiny_model_dir, tmp_path):
    """A deployable DVI checkpoint whose drafter head differs from the verifier's (random LoRA B), with a feature
    drafter (random) as the online default chain trains one."""
    from dvi.checkpoint import save_ckpt
    from kangaroo.drafter_head import attach_drafter_head
    from kangaroo.feature_drafter import attach_feature_drafter
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm

    km = KangarooModel(model_id=str(tiny_model_dir), base_model=load_causal_lm(str(tiny_model_dir)), exit_layer=2)
    head = attach_drafter_head(km, r=4, alpha=8.0)
    attach_feature_drafter(km, window=4, r=4, alpha=8.0, init="random")
    with torch.no_grad():
        head.proj.B.copy_(torch.randn(head.proj.B.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    path = tmp_path / "ckpt" / "final.pt"
    save_ckpt(path, km, None, None, 0.0)
    return path


def bench_argv(model_dir, qfile, out, *extra):
    return ["--model-id", str(model_dir), "--question-file", str(qfile), "--max-new-tokens", "8", "--out", str(out),
            "--device", "cpu", "--num-threads", "1", "--no-progress", *extra]


def raw_lines(out):
    return (out / "raw.jsonl").read_text().splitlines()


# ----------------------------------------------------------------------------------------------- benchmark
def test_benchmark_end_to_end_lossless_and_resumable(tiny_model_dir, qfile, lora, tmp_path, monkeypatch):
    out, held = tmp_path / "bench", heldout_flags(qfile, tmp_path)
    assert bm.main(bench_argv(tiny_model_dir, qfile, out, "--per-category", "1", "--load-lora", str(lora), *held)) == 0
    recs = [json.loads(line) for line in raw_lines(out)]
    assert [r["question_id"] for r in recs] == [1, 3]  # first of each category, file order
    assert recs[0]["order"] != recs[1]["order"] and sorted(recs[0]["order"]) == sorted(bmeth.METHODS)
    for r in recs:
        ms = r["methods"]
        assert set(ms) == set(bmeth.METHODS) and all(m["match"] == [True] for m in ms.values())
        assert len(ms["baseline"]["new_tokens"]) == 1  # first turn only
        n = ms["baseline"]["new_tokens"][0]
        assert ms["baseline"]["passes"] == [n] and ms["hf_generate"]["passes"] == [n]  # one target call per token
        assert all(1 <= ms[m]["passes"][0] <= n for m in bmeth.METHODS)
        assert ms["early_exit_assist"]["drafter_calls"][0] >= 1 and ms["kangaroo"]["drafter_calls"] == [None]
        for m in ("dvi", "dvi_self", "ngram", "memory", "dvi_threshold"):  # every pass has one source
            src = ms[m]["sources"][0]
            assert sum(v["blocks"] for v in src.values()) == ms[m]["passes"][0]
            assert ms[m]["new_tokens"][0] <= sum(v["committed"] for v in src.values()) <= n + 6
        assert set(ms["memory"]["sources"][0]) == {"ngram", "memory", "none"} and ms["kangaroo"]["sources"] == [None]
        assert set(ms["dvi"]["sources"][0]) == {"ngram", "memory", "feature", "self", "none"}  # the auto chain
    table = (out / "table.md").read_text()
    for name in (*bmeth.METHODS, "## writing", "## qa", "## overall", "threads: 1", "--per-category 1"):
        assert name in table
    assert "| NO" not in table and table.count("| yes |") == 3 * len(bmeth.METHODS)
    assert "## Where speed comes from" in table and "| memory | memory |" in table and "| dvi | self |" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lossless"] and summary["groups"] == ["writing", "qa", "overall"]
    check_heldout(summary["heldout"], table, lora)
    assert (out / "speedup.png").stat().st_size > 0
    check_answer_files(out, tiny_model_dir, summary)

    # resume: only question 2 is new; a method that changes a token makes the exit code 1
    real = bcli.make_methods

    def broken(*a, **kw):
        methods = real(*a, **kw)
        good = methods["kangaroo"]

        def bad(ids):
            tokens, *rest = good(ids)
            return tokens[:-1] + [(tokens[-1] + 1) % V], *rest
        return {**methods, "kangaroo": bad}

    monkeypatch.setattr(bcli, "make_methods", broken)
    calls = []
    real_decode = bcli.decode_question
    monkeypatch.setattr(bcli, "decode_question",
                        lambda q, *a, **k: calls.append(q["question_id"]) or real_decode(q, *a, **k))
    rc = bm.main(bench_argv(tiny_model_dir, qfile, out, "--per-category", "2", "--load-lora", str(lora)))
    assert rc == 1 and calls == [2]
    lines = raw_lines(out)
    assert len(lines) == 3 and [json.loads(x) for x in lines[:2]] == recs
    table = (out / "table.md").read_text()
    assert "| kangaroo |" in table and "NO (1 of 3)" in table and "NO (1 of 2)" in table

    # other settings are refused, with one line
    with pytest.raises(SystemExit) as e:
        bm.main(bench_argv(tiny_model_dir, qfile, out, "--max-new-tokens", "9", "--load-lora", str(lora)))
    assert e.value.code == 2


def heldout_flags(qfile, tmp_path) -> list[str]:
    return ["--heldout-file", str(qfile), "--heldout-positions", "20", "--heldout-tokens", "8", "--heldout-cache",
            str(tmp_path / "cache")]


def check_heldout(held_out, table, lora):
    """The trained drafter and the identity drafter, on one held-out set, in summary.json and table.md."""
    assert set(held_out) == {"dvi", "kangaroo"} and held_out["dvi"]["n"] == held_out["kangaroo"]["n"] == 20
    assert held_out["dvi"]["drafter"] == str(lora) and held_out["kangaroo"]["drafter"] == "identity (untrained)"
    assert "## Held-out agreement" in table and f"| dvi | {lora} | {held_out['dvi']['top1']:.3f} |" in table


def check_answer_files(out, model_dir, summary):
    """Spec-Bench answer files, one per method, read back by the speed.py semantics with the tokenizer's own re-count:
    the table's speedups."""
    from kangaroo.model_loading import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    run1 = out / "data" / "spec_bench" / "model_answer_temp0_run_1"
    assert len(list(run1.iterdir())) == len(bmeth.METHODS)
    base = sb.read_answers(run1 / f"{model_dir.name}-vanilla-float32-temp-0.0.jsonl")
    assert [a["question_id"] for a in base] == [1, 3] and base[0]["category"] == "writing"
    for m in bmeth.METHODS:
        ans = sb.read_answers(sb.answer_file(out, 1, str(model_dir), m, "float32"))
        c = ans[0]["choices"][0]
        assert set(c) >= {"turns", "new_tokens", "wall_time", "accept_lengths", "decoding_steps"}
        assert sum(c["accept_lengths"]) == sum(c["new_tokens"]) and len(c["accept_lengths"]) == c["decoding_steps"][0]
        r = sb.speed(ans, base, tok)
        assert r.speedup == pytest.approx(summary["by_group"]["overall"][m]["speedup"]) and sb.equal(ans, base)


def test_benchmark_repeats_give_mean_and_std(tiny_model_dir, qfile, tmp_path):
    out = tmp_path / "rep"
    argv = bench_argv(tiny_model_dir, qfile, out, "--per-category", "1", "--methods", "kangaroo", "--repeats", "2")
    assert bm.main(argv) == 0
    assert len(raw_lines(out)) == 2 and len((out / "raw_run2.jsonl").read_text().splitlines()) == 2
    summary = json.loads((out / "summary.json").read_text())
    k = summary["by_group"]["overall"]["kangaroo"]
    assert summary["runs"] == 2 and k["speedup_std"] is not None and k["questions"] == 2
    assert " ± " in (out / "table.md").read_text() and "- repeats: 2" in (out / "table.md").read_text()
    assert (out / "data" / "spec_bench" / "model_answer_temp0_run_2").is_dir()


def test_each_repeat_starts_with_fresh_drafters(tiny_model_dir, qfile, tmp_path):
    """The memory drafter's memory (and a drafter's calibration) carry over the questions of one repeat, never into
    the next, which would otherwise draft each answer from its own copy: under the threshold rule (no timing in any
    decision) every repeat's blocks come from the same sources."""
    out = tmp_path / "rep"
    argv = bench_argv(tiny_model_dir, qfile, out, "--per-category", "2", "--methods", "memory", "--repeats", "2",
                      "--draft-policy", "threshold")
    assert bm.main(argv) == 0

    def blocks(path):
        return [{src: c["blocks"] for src, c in turn.items()} for line in path.read_text().splitlines()
                for turn in json.loads(line)["methods"]["memory"]["sources"]]

    first, second = blocks(out / "raw.jsonl"), blocks(out / "raw_run2.jsonl")
    assert len(first) == 3 and first == second


def test_benchmark_trains_a_missing_lora_and_decodes_all_turns(tiny_model_dir, qfile, prompts, tmp_path, capsys):
    out, ckpt = tmp_path / "bench", tmp_path / "trained" / "final.pt"
    with pytest.raises(SystemExit):
        bm.main(bench_argv(tiny_model_dir, qfile, out, "--load-lora", str(ckpt)))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "python -m evaluation.inference_kangaroo" in err and "--dvi-online true" in err
    argv = bench_argv(tiny_model_dir, qfile, out, "--per-category", "1", "--load-lora", str(ckpt), "--methods", "dvi",
                      "--train-if-missing", "2", "--train-prompts-jsonl", str(prompts), "--all-turns")
    assert bm.main(argv) == 0 and ckpt.is_file()
    recs = [json.loads(line) for line in raw_lines(out)]
    assert set(recs[0]["methods"]) == {"baseline", "dvi"}
    assert len(recs[0]["baseline_ids"]) == 2 and recs[0]["methods"]["dvi"]["match"] == [True, True]


def record(qid, cat, **methods):
    return {"question_id": qid, "category": cat, "methods": {
        m: {"new_tokens": [t], "wall_s": [w], "passes": [p], "match": [ok]} for m, (t, w, p, ok) in methods.items()}}


def test_per_source_table_from_records():
    """Each method's sources summed over its turns; shares of blocks and time, tokens per pass, ms per ask."""
    from scripts.benchmark.sources import sources_markdown, sources_summary

    def src(calls, draft_ms, blocks, drafted, accepted, committed, verify_ms):
        return {"calls": calls, "draft_ms": draft_ms, "blocks": blocks, "drafted": drafted, "accepted": accepted,
                "committed": committed, "verify_ms": verify_ms}
    turn1 = {"ngram": src(10, 1.0, 4, 12, 8, 12, 40.0), "memory": src(6, 3.0, 2, 6, 2, 4, 20.0),
             "none": src(0, 0.0, 4, 0, 0, 4, 36.0)}
    turn2 = {"ngram": src(2, 1.0, 0, 0, 0, 0, 0.0), "memory": src(2, 1.0, 0, 0, 0, 0, 0.0),
             "none": src(0, 0.0, 2, 0, 0, 2, 18.0)}
    recs = [{"question_id": 1, "category": "A", "methods": {"memory": {"sources": [turn1, turn2]},
                                                             "hf_generate": {"new_tokens": [3]}}},
            {"question_id": 2, "category": "A", "methods": {"memory": {"sources": [None]}}}]
    by = sources_summary(recs, ["hf_generate", "memory"])
    assert list(by) == ["memory"]
    rows = {r["source"]: r for r in by["memory"]}
    assert (rows["ngram"]["calls"], rows["ngram"]["blocks"], rows["none"]["blocks"]) == (12, 4, 6)
    assert rows["ngram"]["block_share"] == pytest.approx(4 / 12) and rows["none"]["committed_per_pass"] == 1.0
    assert rows["memory"]["time_share"] == pytest.approx(24.0 / 120.0)
    md = sources_markdown(by)
    assert "| memory | ngram | 4 | 33.3% | 3.00 | 0.67 | 12 | 0.17 | 10.0 | 35.0% |" in md
    assert "| memory | none | 6 | 50.0% | 1.00 | - | 0 | - | 9.0 | 45.0% |" in md
    assert sources_markdown({}) == ""


def test_benchmark_summary_table_and_plot_from_records(tmp_path):
    """Records without answer texts or re-counts (written before they were kept): the re-count is the new-token
    count, and speed.py's semantics apply: a speed is the mean of per-question speeds."""
    recs = [record(1, "A", baseline=(10, 1.0, 10, True), kangaroo=(10, 0.5, 4, True),
                   hf_generate=(10, 2.0, None, True)),
            record(2, "B", baseline=(20, 1.0, 20, True), kangaroo=(20, 2.0, 5, False),
                   hf_generate=(20, 1.0, None, True))]
    s = brep.summarize([recs], ["baseline", "hf_generate", "kangaroo"])
    assert s["groups"] == ["A", "B", "overall"] and not s["lossless"] and s["runs"] == 1
    a, b, o = (s["by_group"][g]["kangaroo"] for g in s["groups"])
    assert (a["speedup"], a["mean_accepted"], a["mismatches"]) == (2.0, 2.5, 0)
    assert (b["speedup"], b["mismatches"]) == (0.5, 1)
    # per-question speeds 20 and 10 tokens/s against the baseline's 10 and 20
    assert o["tokens_per_s"] == 15.0 and o["speedup"] == 1.0 and o["mean_accepted"] == pytest.approx(30 / 9)
    assert o["speedup_std"] is None and s["by_group"]["overall"]["hf_generate"]["mean_accepted"] is None
    md = brep.table_markdown(s, {"model": "m", "command": "python -m x"})
    assert "| kangaroo | 10 | 2.50 | 20.00 | 2.00x | yes | yes |" in md
    assert "| kangaroo | 30 | 3.33 | 15.00 | 1.00x | NO (1 of 2) | yes |" in md
    assert "| hf_generate | 30 | - | 12.50 | 0.83x | yes | yes |" in md and "`python -m x`" in md
    assert "| A | 1 | 1.00x | 0.50x | 2.00x |" in md and "| **overall** | 2 | 1.00 | - | 3.33 |" in md
    assert "Some method's output differed" in md and s["tasks"] == ["overall"]
    assert brep.plot_speedup(s, tmp_path / "p.png").stat().st_size > 0
    # two repeats: mean and sample std of the per-repeat speedups, in the table as mean ± std
    slower = [record(1, "A", baseline=(10, 1.0, 10, True), kangaroo=(10, 1.0, 4, True)),
              record(2, "B", baseline=(20, 1.0, 20, True), kangaroo=(20, 1.0, 5, True))]
    s2 = brep.summarize([recs, slower], ["baseline", "kangaroo"])
    o2 = s2["by_group"]["overall"]["kangaroo"]
    assert o2["speedup"] == pytest.approx(1.0) and o2["speedup_std"] == pytest.approx(0.0)
    a2 = s2["by_group"]["A"]["kangaroo"]
    assert (a2["speedup"], a2["speedup_std"]) == (pytest.approx(1.5), pytest.approx(0.5 ** 0.5))
    assert "| A | 1 | 1.00x ± 0.00 | 1.50x ± 0.71 |" in brep.table_markdown(s2, {})
    assert brep.plot_speedup(s2, tmp_path / "p2.png").stat().st_size > 0


def test_benchmark_helpers():
    qs = [{"question_id": i, "category": c} for i, c in enumerate("aabab")]
    assert [q["question_id"] for q in bcli.select_questions(qs, 2)] == [0, 1, 2, 4]
    assert bmeth.rotated(["x", "y", "z"], 4) == ["y", "z", "x"]


def test_raw_file_drops_a_cut_last_line(tmp_path):
    raw = bstore.raw_store(tmp_path)
    raw.path.write_text('{"question_id": 1}\n{"question_id": 2, "meth')
    assert raw.records() == [{"question_id": 1}] and raw.done_ids() == {1}
    raw.append({"question_id": 3})
    assert raw.records() == [{"question_id": 1}, {"question_id": 3}]


def test_overwrite_starts_the_raw_file_afresh_and_other_settings_are_refused(tmp_path):
    raw = bstore.raw_store(tmp_path)
    bstore.check_config(tmp_path, {"max_new_tokens": 8}, overwrite=False)
    raw.append({"question_id": 1})
    with pytest.raises(SystemExit):
        bstore.check_config(tmp_path, {"max_new_tokens": 9}, overwrite=False)
    assert raw.done_ids() == {1}
    bstore.check_config(tmp_path, {"max_new_tokens": 9}, overwrite=True)
    assert raw.records() == [] and json.loads((tmp_path / "config.json").read_text()) == {"max_new_tokens": 9}


def test_benchmark_on_a_question_range_every_turn(tiny_model_dir, qfile, tmp_path):
    out = tmp_path / "baseline"
    argv = ["--model-id", str(tiny_model_dir), "--question-file", str(qfile), "--question-begin", "0",
            "--question-end", "2", "--per-category", "1000000", "--methods", "hf_generate,kangaroo", "--all-turns",
            "--max-new-tokens", "6", "--out", str(out), "--device", "cpu", "--num-threads", "1", "--no-progress"]
    assert bm.main(argv) == 0
    recs = [json.loads(line) for line in raw_lines(out)]
    assert [r["question_id"] for r in recs] == [1, 2]  # both of the range, though one category
    assert set(recs[0]["methods"]) == {"baseline", "hf_generate", "kangaroo"}
    assert len(recs[0]["baseline_ids"]) == 2 and recs[0]["methods"]["kangaroo"]["match"] == [True, True]
    assert "`python -m scripts.benchmark --model-id" in (out / "table.md").read_text()
    assert (out / "summary.json").is_file()


def test_dvi_feature_needs_a_checkpoint_with_a_feature_drafter(tiny_model_dir, qfile, tmp_path, capsys):
    """Named, it is refused in one line for a checkpoint without one; by default the list leaves it out."""
    from dvi.checkpoint import save_ckpt
    from kangaroo.drafter_head import attach_drafter_head
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm

    km = KangarooModel(model_id=str(tiny_model_dir), base_model=load_causal_lm(str(tiny_model_dir)), exit_layer=2)
    attach_drafter_head(km, r=4, alpha=8.0)
    save_ckpt(tmp_path / "plain.pt", km, None, None, 0.0)
    argv = bench_argv(tiny_model_dir, qfile, tmp_path / "b", "--per-category", "1", "--load-lora",
                      str(tmp_path / "plain.pt"))
    with pytest.raises(SystemExit) as e:
        bcli.parse_args([*argv, "--methods", "dvi_feature"])
    assert e.value.code == 2 and "holds no feature drafter" in capsys.readouterr().err
    assert "dvi_feature" not in bcli.parse_args(argv).methods


def test_benchmark_drafting_parts_are_lossless(tiny_model_dir, qfile, lora, tmp_path):
    """dvi (the ngram,memory,feature,self chain + goodput + pruned heads from a full-vocabulary checkpoint) and its
    parts."""
    import numpy as np

    from kangaroo.subvocab import save_counts

    save_counts(tmp_path / "c.npz", np.arange(V)[::-1].copy(), {})
    out = tmp_path / "parts"
    parts = "dvi,dvi_self,ngram,memory,dvi_threshold"
    assert bm.main(bench_argv(tiny_model_dir, qfile, out, "--per-category", "1", "--load-lora", str(lora),
                              "--methods", parts, "--drafter-vocab", "300", "--drafter-vocab-file",
                              str(tmp_path / "c.npz"))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lossless"] and summary["methods"] == ["baseline", *parts.split(",")]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["drafter"] == "ngram,memory,feature,self" and cfg["draft_policy"] == "goodput"
    assert cfg["drafter_vocab"] == 300


def test_sampled_benchmark_matches_plain_sampling_at_the_same_seed(tiny_model_dir, qfile, lora, tmp_path, capsys):
    """--temperature > 0: the baseline is plain sampling with --seed and every method of ours equals it; Hugging
    Face's methods are left out (refused when named)."""
    out = tmp_path / "sampled"
    flags = ["--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]
    assert bm.main(bench_argv(tiny_model_dir, qfile, out, "--per-category", "1", "--load-lora", str(lora),
                              *flags)) == 0
    ours = [m for m in bmeth.METHODS if m not in bmeth.HF_METHODS]
    recs = [json.loads(line) for line in raw_lines(out)]
    for r in recs:
        assert set(r["methods"]) == set(ours) and all(m["match"] == [True] for m in r["methods"].values())
    table = (out / "table.md").read_text()
    assert "# Method comparison (sampled, lossless)" in table and "temperature 0.8, top-p 0.9" in table
    assert (out / "data" / "spec_bench" / "model_answer_temp0.8_run_1").is_dir()
    greedy = out.parent / "greedy"
    assert bm.main(bench_argv(tiny_model_dir, qfile, greedy, "--per-category", "1", "--methods", "kangaroo")) == 0
    assert [json.loads(x)["baseline_ids"] for x in raw_lines(greedy)] != [r["baseline_ids"] for r in recs]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        bm.main(bench_argv(tiny_model_dir, qfile, tmp_path / "hf", "--methods", "kangaroo,hf_generate", *flags))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--methods hf_generate under --temperature 0.8" in err and len(err.splitlines()) == 1
