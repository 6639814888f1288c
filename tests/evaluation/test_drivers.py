"""The drivers end to end on a tiny random model folder (real tokenizer), and on the real model for the truth."""
import json

import pytest

from evaluation import inference_baseline, inference_kangaroo
from dvi.metrics import read_acceptance_csv
from evaluation.questions import chat_prompt_ids, load_questions
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from kangaroo.greedy import greedy_decode, eos_ids_of
from tests.helpers import REPO

SPEC_BENCH = REPO.parent / "shared" / "data" / "spec_bench" / "question.jsonl"


@pytest.fixture
def qfile(tmp_path):
    p = tmp_path / "q.jsonl"
    rows = [{"question_id": 1, "category": "writing", "turns": ["Write a haiku.", "Now a limerick."]},
            {"question_id": 2, "category": "qa", "turns": ["What is the capital of France?"]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def run(mod, model_dir, qfile, answer, *extra):
    argv = ["--model-id", str(model_dir), "--question-file", str(qfile), "--answer-file", str(answer),
            "--max-new-tokens", "12", "--device", "cpu", "--no-progress", *extra]
    assert mod.main(argv) == 0
    return [json.loads(line) for line in open(answer)]


def test_drivers_write_spec_bench_answers_and_agree(tiny_model_dir, qfile, tmp_path, capsys):
    base = run(inference_baseline, tiny_model_dir, qfile, tmp_path / "b.jsonl")
    kang = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "k.jsonl", "--adapter-path", "none",
               "--exitlayer", "2", "--threshold", "0.0", "--steps", "4")
    out = capsys.readouterr().out
    assert "[kangaroo] 2 questions" in out and "tok/s" in out and "mean accepted length" in out
    assert [r["question_id"] for r in kang] == [1, 2]
    for b, k in zip(base, kang):
        cb, ck = b["choices"][0], k["choices"][0]
        assert len(ck["turns"]) == len(ck["new_tokens"]) == len(ck["wall_time"]) == len(b["choices"][0]["turns"])
        assert ck["turns"] == cb["turns"] and k["token_ids"] == b["token_ids"]
        assert sum(ck["accept_lengths"]) == sum(ck["new_tokens"]) and all(n <= 12 for n in ck["new_tokens"])
        assert set(cb["accept_lengths"]) == {1}


def test_rerun_skips_answered_questions(tiny_model_dir, qfile, tmp_path, capsys):
    ans = tmp_path / "a.jsonl"
    run(inference_baseline, tiny_model_dir, qfile, ans, "--question-end", "1")
    rows = run(inference_baseline, tiny_model_dir, qfile, ans)
    assert [r["question_id"] for r in rows] == [1, 2]
    assert "(1 already answered)" in capsys.readouterr().out


def test_bad_model_id_is_one_line(capsys, qfile):
    rc = inference_kangaroo.run_main(inference_kangaroo.main,
                                     ["--model-id", "/no/such/model", "--question-file", str(qfile)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "/no/such/model" in err


def test_real_model_lossless_on_spec_bench(real_lm, real_tokenizer):
    """The bundled model in float32: Kangaroo == baseline == HF generate, first MT-bench question, both turns."""
    if not SPEC_BENCH.is_file():  # a clone without ../shared: the bundled model on two built-in questions
        pytest.skip(f"no Spec-Bench question file at {SPEC_BENCH} (a clone without ../shared); "
                    "test_real_model_lossless_on_builtin_questions covers the bundled model")
    km = KangarooModel(model_id="smollm2-135m", base_model=real_lm, exit_layer=2)
    eos = eos_ids_of(real_tokenizer, real_lm.config)
    for q in load_questions(SPEC_BENCH, 0, 1) + load_questions(SPEC_BENCH, 100, 101):
        messages = []
        for turn in q["turns"]:
            messages.append({"role": "user", "content": turn})
            ids = chat_prompt_ids(real_tokenizer, messages, "smollm2-135m")
            hf = real_lm.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1]:].tolist()
            base = greedy_decode(real_lm, ids, 24, eos).tokens
            kang = kangaroo_generate(km, ids, 24, eos, steps=6, threshold=0.6).tokens
            assert base == hf and kang == hf, q["question_id"]
            messages.append({"role": "assistant", "content": real_tokenizer.decode(hf, skip_special_tokens=True)})


def test_real_model_lossless_on_builtin_questions(real_lm, real_tokenizer):
    """The same truth without ../shared: two fixed two-turn questions, Kangaroo == baseline == HF generate."""
    km = KangarooModel(model_id="smollm2-135m", base_model=real_lm, exit_layer=2)
    eos = eos_ids_of(real_tokenizer, real_lm.config)
    for turns in (["Write a haiku about the sea.", "Now make it rhyme."], ["What is 12 times 7?", "And 13 times 7?"]):
        messages = []
        for turn in turns:
            messages.append({"role": "user", "content": turn})
            ids = chat_prompt_ids(real_tokenizer, messages, "smollm2-135m")
            hf = real_lm.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
            assert greedy_decode(real_lm, ids, 16, eos).tokens == hf
            assert kangaroo_generate(km, ids, 16, eos, steps=6, threshold=0.6).tokens == hf
            messages.append({"role": "assistant", "content": real_tokenizer.decode(hf, skip_special_tokens=True)})


def test_interrupted_answer_line_is_redone(tiny_model_dir, qfile, tmp_path):
    ans = tmp_path / "a.jsonl"
    run(inference_baseline, tiny_model_dir, qfile, ans, "--question-end", "1")
    with open(ans, "a") as f:
        f.write('{"question_id": 2, "choi')  # a write cut short by a crash
    rows = run(inference_baseline, tiny_model_dir, qfile, ans)
    assert [r["question_id"] for r in rows] == [1, 2]


@pytest.mark.parametrize("extra", [
    ("--drafter", "hybrid", "--draft-policy", "goodput", "--drafter-vocab", "500"),
    ("--drafter", "ngram,memory", "--draft-policy", "threshold", "--ngram-min", "2", "--ngram-max", "4"),
    ("--drafter", "self", "--draft-policy", "goodput", "--drafter-vocab", "500", "--dvi-online", "true",
     "--dvi-batch-size", "2", "--dvi-update-every", "1", "--dvi-topk", "8"),
])
def test_kangaroo_driver_drafters_match_baseline(tiny_model_dir, qfile, tmp_path, extra):
    """Every drafter, chain, policy and a pruned drafter head (from a counts file) give the baseline's tokens."""
    import numpy as np

    from kangaroo.subvocab import save_counts

    counts = np.random.default_rng(0).integers(0, 100, 49152)
    save_counts(tmp_path / "c.npz", counts, {"model_id": "tiny"})
    base = run(inference_baseline, tiny_model_dir, qfile, tmp_path / "b.jsonl")
    kang = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "k.jsonl", "--exitlayer", "2", "--steps", "3",
               "--drafter-vocab-file", str(tmp_path / "c.npz"), "--cost-curve", str(tmp_path / "cost.json"),
               "--metrics-out", str(tmp_path / "m"), "--save-lora-path", str(tmp_path / "ck"), *extra)
    assert [k["token_ids"] for k in kang] == [b["token_ids"] for b in base]
    if "goodput" in extra:
        assert (tmp_path / "cost.json").is_file()  # measured at startup, written where --cost-curve points
    sources = [r["source"] for r in read_acceptance_csv(tmp_path / "m" / "sources.csv")]
    first = "self" if extra[1] == "self" else "ngram"  # every chain here asks it first, every block
    assert set(sources) <= {"ngram", "memory", "self", "none"} and sources[0] == first


def test_kangaroo_driver_trains_an_adapter_and_deploys_it_both_ways(tiny_model_dir, qfile, tmp_path, capsys):
    """--adapter-mode train online, then the checkpoint (its adapter comes along) and the adapter folder deployed:
    every output is the baseline's."""
    base = [b["token_ids"] for b in run(inference_baseline, tiny_model_dir, qfile, tmp_path / "b.jsonl")]
    common = ("--exitlayer", "2", "--steps", "3", "--drafter", "self", "--draft-policy", "threshold",
              "--metrics-out", str(tmp_path / "m"), "--save-lora-path", str(tmp_path / "ck"))
    trained = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "t.jsonl", *common, "--adapter-mode", "train",
                  "--dvi-adapter-window", "4", "--dvi-online", "true", "--dvi-batch-size", "2", "--dvi-update-every",
                  "1", "--dvi-topk", "8", "--dvi-trainer", "inline", "--max-online-train-ms", "100000")
    assert '"train_steps": 0' not in capsys.readouterr().out
    assert (tmp_path / "ck" / "adapter" / "adapter.safetensors").is_file()
    deployed = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "d.jsonl", *common, "--dvi-online", "false",
                   "--load-lora", str(tmp_path / "ck" / "final.pt"))
    folder = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "f.jsonl", *common,
                 "--adapter-path", str(tmp_path / "ck" / "adapter"))
    for answers in (trained, deployed, folder):
        assert [k["token_ids"] for k in answers] == base


def test_sampled_drivers_give_the_same_text_for_the_same_seed(tiny_model_dir, qfile, tmp_path, capsys):
    """--temperature/--top-p/--seed: the Kangaroo driver (the deployed chain and policy) writes exactly the baseline
    driver's sampled answers; --compare-greedy checks against plain sampling; another seed or greedy differ."""
    flags = ["--temperature", "0.8", "--top-p", "0.9", "--seed", "5"]
    base = run(inference_baseline, tiny_model_dir, qfile, tmp_path / "b.jsonl", *flags)
    kang = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "k.jsonl", "--adapter-path", "none",
               "--steps", "4", "--compare-greedy", "--metrics-out", str(tmp_path / "m"), *flags)
    assert [k["token_ids"] for k in kang] == [b["token_ids"] for b in base]
    s = json.loads((tmp_path / "m" / "vs_greedy.json").read_text())
    assert s["equal_to_greedy"] == s["turns"] == 3 and s["reference"]["sampled"]["seed"] == 5
    assert "outputs equal to plain sampling (same seed): 3/3" in capsys.readouterr().out
    greedy = run(inference_baseline, tiny_model_dir, qfile, tmp_path / "g.jsonl")
    other = run(inference_baseline, tiny_model_dir, qfile, tmp_path / "o.jsonl", *flags[:-1], "6")
    for rows in (greedy, other):
        assert [r["token_ids"] for r in rows] != [b["token_ids"] for b in base]


def test_real_model_sampled_speculation_equals_plain_sampling(real_lm, real_tokenizer):
    """The bundled model on the engine (its verify pass and plain steps bit for bit), the packed drafter head where
    built: sampled, the self-drafter and the deployed chain commit plain sampling's tokens."""
    from kangaroo.draft_policy import ThresholdStop
    from kangaroo.drafters import make_drafter
    from kangaroo.packed_head import configure
    from kangaroo.sampling import SamplingParams

    km = KangarooModel(model_id="smollm2-135m", base_model=real_lm, exit_layer=2)
    configure(km, "auto", frozen=True)
    eos = eos_ids_of(real_tokenizer, real_lm.config)
    ask = "Repeat this line three times: the rain in Spain stays mainly in the plain."
    ids = chat_prompt_ids(real_tokenizer, [{"role": "user", "content": ask}], "smollm2-135m")
    accepted = 0
    for p in (SamplingParams(0.7, top_p=0.95, seed=1), SamplingParams(1.0, seed=2)):
        base = greedy_decode(real_lm, ids, 32, eos, sampling=p).tokens
        assert base != greedy_decode(real_lm, ids, 32, eos).tokens
        for kind in ("self", "ngram,memory,self"):
            res = kangaroo_generate(km, ids, 32, eos, drafter=make_drafter(kind, 6, lambda: ThresholdStop(0.6)),
                                    sampling=p)
            assert res.tokens == base, (p, kind)
            accepted += len(res.tokens) - len(res.accept_lengths)
    assert accepted > 0   # drafts were accepted: not only plain steps
