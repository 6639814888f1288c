"""One command that builds the method comparison table (work plan step 10).

Every method decodes the same chat prompts greedily, one question at a time, in an order that rotates per
question (so drift of a shared machine hits all alike), and its token ids are compared with the baseline's.
With --temperature > 0 (--top-p, --top-k, --seed: kangaroo/sampling.py) every method samples instead, each prompt
with the sampling seed --seed, and is compared with plain sampling (the baseline) at the same seed; Hugging Face's
methods sample from their own generator, so they are left out (naming them in --methods is refused):

  baseline           kangaroo.greedy.greedy_decode: our KV-cache greedy loop, the reference
  hf_generate        lm.generate(do_sample=False)
  prompt_lookup      lm.generate(prompt_lookup_num_tokens=6, do_sample=False)
  early_exit_assist  lm.generate(assistant_early_exit=EXITLAYER, do_sample=False): HF self-speculation, HF defaults
                     for the draft (num_assistant_tokens, assistant_confidence_threshold; see the table header)
  kangaroo           kangaroo_generate with the identity drafter (the verifier's head on layer k), --threshold rule
  dvi                the default deployed configuration: --drafter (auto: the chain ngram,memory,self),
                     --draft-policy (auto: goodput on the verify-cost curve measured at startup), --drafter-vocab,
                     the LoRA head of --load-lora (deploy: no training)
  dvi_self           the same without the lookups: the self-drafter (LoRA head) under --draft-policy
  ngram              the n-gram drafter alone (prompt lookup over prompt + output) under --draft-policy
  memory             the chain ngram,memory: prompt lookup, then the memory drafter over the outputs of the earlier
                     questions of the run (--memory-tokens), under --draft-policy; no model-side drafter
  dvi_threshold      the LoRA self-drafter under Kangaroo's fixed --threshold rule (the old `dvi` method)
  dvi_feature        the feature drafter of --load-lora alone (kangaroo/drafters/feature.py), under --draft-policy

    python -m scripts.benchmark --model-id smollm2-135m --question-file Q --per-category 10 \\
        --max-new-tokens 64 --load-lora runs/checkpoints/final.pt --out runs/benchmark

Questions: the first --per-category questions of each category, in file order (of the file's questions
--question-begin..--question-end, all by default); the first turn only, or with
--all-turns every turn, each prompt holding the baseline's own earlier answers. Output: OUT/raw.jsonl (one line
per question, appended as soon as it is done; a rerun skips those questions, --overwrite starts afresh; the
settings are kept in OUT/config.json and a rerun with other settings is refused), OUT/table.md (ending in the
per-source table: each of our methods' verifier passes, tokens per pass and time by draft source, over every
repeat), OUT/summary.json and OUT/speedup.png, and Spec-Bench answer files
(OUT/data/spec_bench/model_answer_temp0_run_R/MODEL-METHOD-DTYPE-temp-0.0.jsonl, the baseline named vanilla) that
Spec-Bench's speed.py and equal.py read as they are. Speeds and speedups are computed as speed.py does
(scripts/benchmark/spec_bench.py); --repeats N runs the whole comparison N times (repeat R > 1 in
OUT/raw_runR.jsonl) and the table shows mean ± std. Exit code 1 if some method's output differs from the
baseline's on some question (all methods are lossless, so that is a bug; the table is still written). In
float16/bfloat16 a difference whose first differing token is a near-tie of the verifier (top-2 logit gap within
kangaroo.lossless.TIE_TOLERANCE) is reported with its gap and counted as a match; float32 requires equality.

A missing --load-lora ends the run with the command that trains one; --train-if-missing N instead trains it
first (evaluation.inference_kangaroo, DVI online on the first N prompts of --train-prompts-jsonl, with this run's
model, exit layer, threshold, steps and --max-new-tokens) and saves it as --load-lora (which must end in final.pt).

Held-out agreement (``dvi/heldout.py``): the trained drafter of dvi (and the identity drafter of kangaroo, the
untrained reference) evaluated as deployed on the fixed held-out set (--heldout-*; by default the one every DVI run
evaluates on, read from its cache): top-1 agreement with the verifier and the teacher-forced accepted length (at most
--steps), in OUT/table.md and OUT/summary.json (``heldout``); --heldout-positions 0 skips it.
"""
from __future__ import annotations

import shlex
import sys
from collections import Counter
from pathlib import Path

import torch

from common.cells import fmt
from common.errors import ConfigError
from evaluation.cli import (OneLineParser, add_drafter_args, add_model_args, add_sampling_args, add_speculation_args,
                            apply_runtime, drafter_config, fail, resolve_device_dtype, resolve_model_id,
                            resolve_question_file, sampling_params, validate_against_config,
                            validate_configs)
from scripts.benchmark.heldout import add_heldout_args, heldout_config, heldout_scores
from scripts.benchmark.methods import (HF_METHODS, LORA_METHODS, MEMORY_CHAIN, METHODS, TargetCalls, build_models,
                                       decode_question, make_methods, rotated)
from scripts.benchmark.report import cell, match_cell, write_report
from scripts.benchmark.store import CHECKED, check_config, raw_store, write_answer_files

def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m scripts.benchmark", description=__doc__.splitlines()[0])
    add_model_args(p)
    p.set_defaults(bench_name="spec_bench")
    p.add_argument("--question-file", default=None,
                   help="Spec-Bench question jsonl (default: data/spec_bench/question.jsonl, then "
                        "../shared/data/spec_bench/question.jsonl)")
    p.add_argument("--per-category", type=int, default=10, help="first N questions of each category (file order)")
    p.add_argument("--question-begin", type=int, default=None,
                   help="only questions from this index of the file (0-based) on, before --per-category applies")
    p.add_argument("--question-end", type=int, default=None, help="only questions before this index of the file")
    p.add_argument("--all-turns", action="store_true",
                   help="decode every turn (prompts hold the baseline's earlier answers); default: first turn only")
    p.add_argument("--max-new-tokens", type=int, default=64)
    add_sampling_args(p)
    add_speculation_args(p)
    add_drafter_args(p)
    p.add_argument("--load-lora", default="runs/checkpoints/final.pt", help="DVI LoRA checkpoint for the dvi method")
    p.add_argument("--train-if-missing", type=int, default=0, metavar="N",
                   help="if --load-lora is missing, first train it online on N prompts of --train-prompts-jsonl")
    p.add_argument("--train-prompts-jsonl", default="assets/sharegpt.jsonl")
    add_heldout_args(p)
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of " + ",".join(METHODS) + " (baseline is always run; default: all, "
                        "or all but " + ",".join(HF_METHODS) + " under --temperature > 0)")
    p.add_argument("--out", default="runs/benchmark")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the whole comparison N times: the table shows mean ± std over the repeats")
    p.add_argument("--overwrite", action="store_true", help="start OUT/raw.jsonl (and each repeat's file) afresh")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    resolve_model_id(args)
    if min(args.per_category, args.max_new_tokens, args.repeats) < 1:
        fail("--per-category, --max-new-tokens and --repeats must be >= 1")
    if min(args.question_begin or 0, args.question_end if args.question_end is not None else 0) < 0:
        fail("--question-begin and --question-end must be >= 0")
    try:
        greedy = sampling_params(args).greedy
    except ConfigError as e:
        fail(str(e))
    names = [m.strip() for m in (args.methods or ",".join(METHODS)).split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad:
        fail(f"--methods: unknown {', '.join(bad)}; pick from {','.join(METHODS)}")
    hf = [m for m in names if m in HF_METHODS]
    if hf and not greedy and args.methods:
        fail(f"--methods {','.join(hf)} under --temperature {args.temperature}: Hugging Face samples from its own "
             "generator, so its answers cannot equal plain sampling's; leave them out (or decode greedily)")
    explicit = bool(args.methods)
    args.methods = [m for m in METHODS if m == "baseline" or (m in names and (greedy or m not in HF_METHODS))]
    validate_configs(args)  # --exitlayer, --threshold, --steps and the drafting flags: DrafterConfig checks them
    heldout_config(args)
    from kangaroo.drafter_config import resolve_auto
    from kangaroo_dvi.session_flags import resolve_drafter_vocab

    resolve_drafter_vocab(args)  # --drafter-vocab auto: a pruned --load-lora checkpoint's size

    from dvi.deploy import peek_deployment

    saved = peek_deployment(args.load_lora)  # deploy: auto = ngram,memory(,feature),self, goodput policy
    if saved is not None and saved.feature is None and "dvi_feature" in args.methods:
        if explicit:
            fail(f"--methods dvi_feature: {args.load_lora} holds no feature drafter; pass a checkpoint of a run that "
                 "trained one (the online default chain ngram,feature,self does), or leave dvi_feature out")
        args.methods.remove("dvi_feature")  # the default list: what the checkpoint can run
    resolved = resolve_auto(drafter_config(args), feature=saved is not None and saved.feature is not None)
    args.drafter, args.draft_policy = resolved.drafter, resolved.draft_policy
    resolve_question_file(args)
    resolve_device_dtype(args)
    return args


# ----------------------------------------------------------------------------------------------- inputs
def select_questions(questions: list[dict], per_category: int) -> list[dict]:
    """The first ``per_category`` questions of each category, file order kept."""
    seen, out = Counter(), []
    for q in questions:
        cat = q.get("category", "uncategorized")
        if seen[cat] < per_category:
            seen[cat] += 1
            out.append(q)
    return out
def train_command(args) -> list[str]:
    """inference_kangaroo argv that trains a DVI drafter online and saves it as --load-lora."""
    out = Path(args.out) / "train"
    argv = ["--model-id", args.model_id, "--dvi-online", "true", "--prompts-jsonl", args.train_prompts_jsonl,
            "--max-prompts", str(args.train_if_missing), "--save-lora-path", str(Path(args.load_lora).parent),
            "--exitlayer", str(args.exitlayer), "--threshold", str(args.threshold), "--steps", str(args.steps),
            "--max-new-tokens", str(args.max_new_tokens), "--device", args.device, "--dtype", args.dtype,
            "--metrics-out", str(out / "metrics"), "--answer-file", str(out / "answers.jsonl"), "--overwrite"]
    if args.num_threads is not None:
        argv += ["--num-threads", str(args.num_threads)]
    if "dvi_feature" in args.methods:  # train the feature drafter too (its checkpoint section)
        argv += ["--drafter", "ngram,feature,self"]
    return argv + (["--no-progress"] if args.no_progress else [])


def ensure_lora(args) -> None:
    if not set(LORA_METHODS) & set(args.methods) or Path(args.load_lora).is_file():
        return
    if not args.train_if_missing:
        fail(f"--load-lora {args.load_lora} does not exist: train a drafter first with `python -m "
             f"evaluation.inference_kangaroo --model-id {args.model_id} --dvi-online true --prompts-jsonl "
             f"assets/sharegpt.jsonl --max-prompts 300 --save-lora-path {Path(args.load_lora).parent}` "
             "(or pass --train-if-missing 300, or leave dvi out of --methods)")
    if Path(args.load_lora).name != "final.pt":
        fail(f"--train-if-missing saves DIR/final.pt, so --load-lora must end in final.pt (got {args.load_lora})")
    from evaluation import inference_kangaroo

    print(f"[benchmark] {args.load_lora} missing: training it first ({args.train_if_missing} prompts)")
    if inference_kangaroo.main(train_command(args)) or not Path(args.load_lora).is_file():
        fail(f"training did not produce {args.load_lora}: see the messages above")
def hf_assist_defaults(lm) -> str:
    from transformers import GenerationConfig

    gc, dflt = lm.generation_config, getattr(GenerationConfig, "_get_default_generation_params", dict)()
    vals = {k: getattr(gc, k, None) if getattr(gc, k, None) is not None else dflt.get(k)
            for k in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")}
    return ", ".join(f"{k}={v}" for k, v in vals.items())


def run_meta(args, lm, n_questions: int) -> dict:
    import transformers

    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    return {"model": args.model_id, "device": device, "dtype": args.dtype, "threads": torch.get_num_threads(),
            "questions per category": args.per_category, "questions": n_questions,
            "turns": "all" if args.all_turns else "first", "max new tokens": args.max_new_tokens,
            "kangaroo": f"exit layer {args.exitlayer}, threshold {args.threshold}, steps {args.steps}",
            "dvi drafter": args.load_lora if set(LORA_METHODS) & set(args.methods) else "not run",
            "drafting": f"dvi: {args.drafter} drafter, {args.draft_policy} policy; dvi_self / ngram / memory "
                        f"({MEMORY_CHAIN}): {args.draft_policy} policy; n-grams {args.ngram_min}..{args.ngram_max}; "
                        f"memory {args.memory_tokens} tokens, seeded from {args.memory_seed or 'nothing'}; drafter "
                        f"vocabulary {'auto' if args.drafter_vocab == -1 else args.drafter_vocab or 'full'}",
            "prompt_lookup": "prompt_lookup_num_tokens=6",
            "early_exit_assist": f"assistant_early_exit={args.exitlayer}, HF draft defaults: {hf_assist_defaults(lm)}",
            "sampling": sampling_label(args),
            "repeats": args.repeats,
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
            "command": shlex.join(["python", "-m", "scripts.benchmark", *args.argv])}


def sampling_label(args) -> str:
    s = sampling_params(args)
    if s.greedy:
        return "greedy"
    return (f"sampled: temperature {s.temperature}, top-p {s.top_p}, top-k {s.top_k or 'off'}, seed {s.seed} (every "
            "prompt; the baseline is plain sampling with it)")


def decode_runs(args, questions: list[dict], out: Path, new_methods, tokenizer, judge_fn) -> list[list[dict]]:
    """The whole comparison ``--repeats`` times (repeat r's records in its own raw file; questions already there are
    skipped); returns each repeat's records of ``questions``. Each repeat decodes with fresh methods
    (``new_methods()``): a drafter's calibration and the memory drafter's memory carry over the questions of one
    repeat, as when serving, but never into the next repeat, which would find its own answers there."""
    from tqdm import tqdm

    names, wanted, runs = list(args.methods), {q["question_id"] for q in questions}, []
    for run in range(1, args.repeats + 1):
        raw = raw_store(out, run)
        done = raw.done_ids()
        todo = [(i, q) for i, q in enumerate(questions) if q["question_id"] not in done]
        methods = new_methods() if todo else {}
        desc = "benchmark" if args.repeats == 1 else f"benchmark {run}/{args.repeats}"
        for i, q in tqdm(todo, desc=desc, disable=args.no_progress, dynamic_ncols=True):
            # the order rotates per question, and per repeat
            raw.append(decode_question(q, rotated(names, i + run - 1), methods, tokenizer, args, judge_fn))
        runs.append([r for r in raw.records() if r["question_id"] in wanted])
    return runs


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    apply_runtime(args)
    args.argv = argv
    from evaluation.questions import chat_prompt_ids, load_questions
    from kangaroo.greedy import eos_ids_of
    from kangaroo.lossless import judge
    from kangaroo.model_loading import load_causal_lm, load_tokenizer

    questions = select_questions(load_questions(args.question_file, args.question_begin, args.question_end),
                                 args.per_category)
    out = Path(args.out)
    config = {k: getattr(args, k, None) for k in CHECKED if k != "threads"} | {"threads": torch.get_num_threads()}
    check_config(out, config, args.overwrite)
    ensure_lora(args)

    tokenizer = load_tokenizer(args.model_id)
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    validate_against_config(args, lm.config)
    eos = eos_ids_of(tokenizer, lm.config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=None)
    models, calls = build_models(args, lm, tokenizer), TargetCalls(lm)
    warm = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}], args.model_id, device=args.device)[:, -8:]

    def new_methods() -> dict:
        methods = make_methods(args, lm, models, eos, pad_id, calls)
        for fn in methods.values():  # untimed: lazy initialisation is not charged to the first question
            fn(warm)
        return methods

    names, heldout = list(args.methods), heldout_scores(args, models, tokenizer)
    sampling = sampling_params(args)
    runs = decode_runs(args, questions, out, new_methods, tokenizer,
                       lambda ids, ref, o: judge(lm, ids, ref, o, sampling=sampling))
    summary = write_report(out, runs, names, run_meta(args, lm, len(runs[0])), heldout)
    write_answer_files(out, runs, names, args.model_id, args.dtype, sampling.temperature)
    overall = summary["by_group"]["overall"]
    for m in names:
        s = overall[m]
        print(f"[{m}] {s['new_tokens']} tokens, {cell(s, 'tokens_per_s', '.2f')} tok/s, speedup "
              f"{cell(s, 'speedup', '.2f', 'x')}, mean accepted {fmt(s['mean_accepted'], '.2f')}, matches baseline "
              f"{match_cell(s)}")
    for name, h in heldout.items():
        print(f"[heldout] {name} ({h['drafter']}): top-1 {h['top1']:.3f}, accepted length {h['accept_len']:.2f} over "
              f"{h['n']} held-out positions")
    print(f"[benchmark] {out / 'table.md'}, {out / 'summary.json'}, {out / 'speedup.png'}, answer files under "
          f"{out / 'data' / 'spec_bench'}")
    if not summary["lossless"]:
        print("error: some method's output differs from the baseline's (see 'matches baseline' in the table)",
              file=sys.stderr)
        return 1
    return 0
