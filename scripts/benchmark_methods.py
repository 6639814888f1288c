"""One command that builds the method comparison table (work plan step 10).

Every method decodes the same chat prompts greedily, one question at a time, in an order that rotates per
question (so drift of a shared machine hits all alike), and its token ids are compared with the baseline's:

  baseline           kangaroo.greedy.greedy_decode: our KV-cache greedy loop, the reference
  hf_generate        lm.generate(do_sample=False)
  prompt_lookup      lm.generate(prompt_lookup_num_tokens=6, do_sample=False)
  early_exit_assist  lm.generate(assistant_early_exit=EXITLAYER, do_sample=False): HF self-speculation, HF defaults
                     for the draft (num_assistant_tokens, assistant_confidence_threshold; see the table header)
  kangaroo           kangaroo_generate with the identity drafter (the verifier's head on layer k), --threshold rule
  dvi                the default deployed configuration: --drafter (auto: hybrid), --draft-policy (auto: goodput on
                     the verify-cost curve measured at startup), --drafter-vocab, the LoRA head of --load-lora
                     (deploy: no training)
  dvi_self           the same without the n-gram drafter: the self-drafter (LoRA head) under --draft-policy
  ngram              the n-gram drafter alone (prompt lookup over prompt + output) under --draft-policy
  dvi_threshold      the LoRA self-drafter under Kangaroo's fixed --threshold rule (the old `dvi` method)

    python -m scripts.benchmark_methods --model-id smollm2-135m --question-file Q --per-category 10 \\
        --max-new-tokens 64 --load-lora runs/checkpoints/final.pt --out runs/benchmark

Questions: the first --per-category questions of each category, in file order; the first turn only, or with
--all-turns every turn, each prompt holding the baseline's own earlier answers. Output: OUT/raw.jsonl (one line
per question, appended as soon as it is done; a rerun skips those questions, --overwrite starts afresh; the
settings are kept in OUT/config.json and a rerun with other settings is refused), OUT/table.md,
OUT/summary.json and OUT/speedup.png. Exit code 1 if some method's output differs from the baseline's on some
question (all methods are lossless, so that is a bug; the table is still written). In float16/bfloat16 a
difference whose first differing token is a near-tie of the verifier (top-2 logit gap within
kangaroo.lossless.TIE_TOLERANCE) is reported with its gap and counted as a match; float32 requires equality.

A missing --load-lora ends the run with the command that trains one; --train-if-missing N instead trains it
first (evaluation.inference_kangaroo, DVI online on the first N prompts of --train-prompts-jsonl, with this run's
model, exit layer, threshold, steps and --max-new-tokens) and saves it as --load-lora (which must end in final.pt).
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from evaluation.cli import (OneLineParser, add_drafter_args, add_model_args, add_speculation_args, fail,
                                resolve_device_dtype, resolve_model_id, resolve_question_file, run_main,
                                validate_against_config, validate_drafter_args)
from common.errors import UserError

METHODS = ("baseline", "hf_generate", "prompt_lookup", "early_exit_assist", "kangaroo", "dvi", "dvi_self", "ngram",
           "dvi_threshold")
LORA_METHODS = ("dvi", "dvi_self", "dvi_threshold")
HF_KWARGS = {"hf_generate": {}, "prompt_lookup": {"prompt_lookup_num_tokens": 6}}
# settings that change what a question's record holds: a resumed run must keep them
CHECKED = ("model_id", "question_file", "all_turns", "max_new_tokens", "exitlayer", "threshold", "steps",
           "load_lora", "methods", "device", "dtype", "threads", "drafter", "draft_policy", "drafter_vocab",
           "ngram_min", "ngram_max")


def build_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.set_defaults(bench_name="spec_bench")
    p.add_argument("--question-file", default=None,
                   help="Spec-Bench question jsonl (default: data/spec_bench/question.jsonl, then "
                        "../shared/data/spec_bench/question.jsonl)")
    p.add_argument("--per-category", type=int, default=10, help="first N questions of each category (file order)")
    p.add_argument("--all-turns", action="store_true",
                   help="decode every turn (prompts hold the baseline's earlier answers); default: first turn only")
    p.add_argument("--max-new-tokens", type=int, default=64)
    add_speculation_args(p)
    add_drafter_args(p)
    p.add_argument("--load-lora", default="runs/checkpoints/final.pt", help="DVI LoRA checkpoint for the dvi method")
    p.add_argument("--train-if-missing", type=int, default=0, metavar="N",
                   help="if --load-lora is missing, first train it online on N prompts of --train-prompts-jsonl")
    p.add_argument("--train-prompts-jsonl", default="assets/sharegpt.jsonl")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of " + ",".join(METHODS) + " (baseline is always run)")
    p.add_argument("--out", default="runs/benchmark")
    p.add_argument("--overwrite", action="store_true", help="start OUT/raw.jsonl afresh")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    resolve_model_id(args)
    if args.per_category < 1 or args.max_new_tokens < 1 or args.steps < 1 or args.exitlayer < 1:
        fail("--per-category, --max-new-tokens, --steps and --exitlayer must be >= 1")
    if not 0.0 <= args.threshold <= 1.0:
        fail("--threshold must lie in [0, 1] (a probability)")
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad:
        fail(f"--methods: unknown {', '.join(bad)}; pick from {','.join(METHODS)}")
    args.methods = [m for m in METHODS if m == "baseline" or m in names]
    validate_drafter_args(args)
    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import resolve_auto

    resolved = resolve_auto(drafter_config(args))  # deploy: auto = hybrid drafter, goodput policy
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


def rotated(methods: list[str], i: int) -> list[str]:
    k = i % len(methods)
    return methods[k:] + methods[:k]


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


# ----------------------------------------------------------------------------------------------- raw records
def read_raw(path) -> list[dict]:
    """Records of OUT/raw.jsonl; a last line cut by an interrupted write is ignored (that question is redone)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    records = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if line.endswith("\n"):
                raise UserError(f"{path}:{lineno} is not a benchmark record: move the file away or pass --overwrite")
    return records


def append_raw(path, record: dict) -> None:
    path = Path(path)
    if path.exists() and path.stat().st_size:
        text = path.read_bytes()
        if not text.endswith(b"\n"):  # drop a fragment left by an interrupted write, or the new line would join it
            path.write_bytes(text[:text.rfind(b"\n") + 1])
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def check_config(out: Path, config: dict, overwrite: bool) -> None:
    """Keep OUT/config.json; refuse to resume a run made with other settings."""
    path = out / "config.json"
    if overwrite:
        for name in ("raw.jsonl", "config.json"):
            (out / name).unlink(missing_ok=True)
    if path.exists() and (out / "raw.jsonl").exists():
        old = json.loads(path.read_text())
        diff = [k for k in CHECKED if old.get(k) != config.get(k)]
        if diff:
            shown = "; ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            fail(f"{out} holds a run with other settings ({shown}): pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))


# ----------------------------------------------------------------------------------------------- methods
class TargetCalls:
    """Counts forward calls of the HF model. The early-exit assistant is the same module, but HF lowers
    config.num_hidden_layers to the exit layer while it drafts, which tells its calls apart."""

    def __init__(self, lm):
        self.lm, self.full = lm, lm.config.num_hidden_layers
        self.target = self.assistant = 0
        lm.register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs):
        if self.lm.model.config.num_hidden_layers < self.full:
            self.assistant += 1
        else:
            self.target += 1

    def reset(self) -> None:
        self.target = self.assistant = 0


def make_methods(args, lm, models: dict, eos: set[int], pad_id: int | None, calls: TargetCalls,
                 tokenizer=None) -> dict:
    """name -> decode(ids) -> (new token ids, verifier passes, drafter calls or None)."""
    from kangaroo.greedy import greedy_decode
    from kangaroo.speculative import kangaroo_generate

    n = args.max_new_tokens

    def baseline(ids):
        r = greedy_decode(lm, ids, n, eos)
        return r.tokens, r.steps, None

    def ours(model, drafter=None):
        def decode(ids):
            r = kangaroo_generate(model, ids, n, eos, steps=args.steps, threshold=args.threshold, drafter=drafter)
            return r.tokens, r.steps, None
        return decode

    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import cost_curve
    from kangaroo.draft_policy import make_policy
    from kangaroo.drafters import make_drafter

    def drafter(kind, policy, model):
        """One drafter per method for the whole run: its calibration carries over questions, as when serving."""
        if model is None:
            return None
        cost = cost_curve(drafter_config(args), model) if policy == "goodput" else None
        return make_drafter(kind, args.steps, lambda: make_policy(policy, args.threshold, cost, args.goodput_prior),
                            args.ngram_min, args.ngram_max)

    lora_model, plain = models.get("dvi"), models.get("kangaroo")

    def hf(**kw):
        def decode(ids):
            calls.reset()
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=sorted(eos) or None, pad_token_id=pad_id, **kw)
            return out[0, ids.shape[1]:].tolist(), calls.target, calls.assistant if "assistant_early_exit" in kw else None
        return decode

    builders = {"baseline": lambda: baseline, "early_exit_assist": lambda: hf(assistant_early_exit=args.exitlayer),
                **{m: (lambda kw=kw: hf(**kw)) for m, kw in HF_KWARGS.items()},
                "kangaroo": lambda: ours(plain),
                "dvi": lambda: ours(lora_model, drafter(args.drafter, args.draft_policy, lora_model)),
                "dvi_self": lambda: ours(lora_model, drafter("self", args.draft_policy, lora_model)),
                "ngram": lambda: ours(plain, drafter("ngram", args.draft_policy, plain)),
                "dvi_threshold": lambda: ours(lora_model, drafter("self", "threshold", lora_model))}
    return {m: builders[m]() for m in args.methods}


def build_models(args, lm, tokenizer=None) -> dict:
    from dvi.deploy import deploy_drafter
    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import apply_drafter_vocab
    from kangaroo.kangaroo_model import KangarooModel

    models = {}
    if {"kangaroo", "ngram"} & set(args.methods):
        models["kangaroo"] = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
    if set(LORA_METHODS) & set(args.methods):
        km = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
        apply_drafter_vocab(drafter_config(args), km, tokenizer)  # a full-vocabulary LoRA loads sliced to the kept rows
        deploy_drafter(km, args.load_lora)  # deploy: LoRA tensors only, no trainer
        models["dvi"] = km
    return models


def timed(fn, ids, device):
    from evaluation.eval_loop import sync

    sync(device)
    t0 = time.perf_counter()
    out = fn(ids)
    sync(device)
    return out, time.perf_counter() - t0


def decode_question(q: dict, order: list[str], methods: dict, tokenizer, args, judge_fn=None) -> dict:
    """All methods on every decoded turn of ``q``; later turns hold the baseline's earlier answers.
    ``judge_fn(ids, reference, output) -> kangaroo.lossless.Verdict`` rules on a difference (float16: a flip at a
    near-tie within the stated tolerance counts as a match, and is recorded with its gap)."""
    from evaluation.questions import chat_prompt_ids

    per = {m: {"new_tokens": [], "wall_s": [], "passes": [], "drafter_calls": [], "match": []} for m in order}
    base_ids, messages = [], []
    for t, turn in enumerate(q["turns"] if args.all_turns else q["turns"][:1]):
        messages.append({"role": "user", "content": turn})
        ids = chat_prompt_ids(tokenizer, messages, args.model_id, device=args.device)
        outs = {}
        for m in order:
            (tokens, passes, drafter), wall = timed(methods[m], ids, args.device)
            outs[m] = tokens
            r = per[m]
            r["new_tokens"].append(len(tokens))
            r["wall_s"].append(wall)
            r["passes"].append(passes)
            r["drafter_calls"].append(drafter)
        for m in order:
            same = outs[m] == outs["baseline"]
            if not same and judge_fn is not None:
                v = judge_fn(ids, outs["baseline"], outs[m])
                per[m].setdefault("first_difference", []).append([t, v.position, v.gap, v.tolerance])
                print(f"[{m}] question {q['question_id']} turn {t}: {v.line()}", file=sys.stderr)
                same = v.ok
            per[m]["match"].append(same)
            if not same:
                per[m].setdefault("mismatch_ids", []).append([t, outs[m]])
        base_ids.append(outs["baseline"])
        messages.append({"role": "assistant",
                         "content": tokenizer.decode(outs["baseline"], skip_special_tokens=True).strip()})
    return {"question_id": q["question_id"], "category": q.get("category", "uncategorized"), "order": order,
            "baseline_ids": base_ids, "methods": {m: per[m] for m in methods}}


# ----------------------------------------------------------------------------------------------- report (pure)
def method_stats(records: list[dict], method: str) -> dict:
    rows = [r["methods"][method] for r in records if method in r["methods"]]
    tokens = sum(sum(x["new_tokens"]) for x in rows)
    wall = sum(sum(x["wall_s"]) for x in rows)
    passes = [p for x in rows for p in x["passes"]]
    n_pass = None if not passes or any(p is None for p in passes) else sum(passes)
    return {"questions": len(rows), "new_tokens": tokens, "wall_s": wall, "verifier_passes": n_pass,
            "mean_accepted": tokens / n_pass if n_pass else None,
            "tokens_per_s": tokens / wall if wall > 0 else None,
            "mismatches": sum(not all(x["match"]) for x in rows)}


def summarize(records: list[dict], methods: list[str]) -> dict:
    """Per category (first-seen order) and overall: per-method stats, speedup = tokens/s over the baseline's."""
    cats = list(dict.fromkeys(r["category"] for r in records))
    groups = {c: [r for r in records if r["category"] == c] for c in cats}
    groups["overall"] = records
    by_group = {}
    for g, recs in groups.items():
        stats = {m: method_stats(recs, m) for m in methods}
        base = stats["baseline"]["tokens_per_s"]
        for s in stats.values():
            s["speedup"] = s["tokens_per_s"] / base if s["tokens_per_s"] is not None and base else None
        by_group[g] = stats
    return {"methods": list(methods), "groups": list(groups), "by_group": by_group,
            "lossless": all(s["mismatches"] == 0 for s in by_group["overall"].values())}


def _f(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def match_cell(s: dict) -> str:
    return "yes" if s["mismatches"] == 0 else f"NO ({s['mismatches']} of {s['questions']})"


def matrix_markdown(summary: dict, key: str, spec: str, suffix: str = "") -> str:
    """One row per group (categories, then overall), one column per method: ``key`` of each method's stats."""
    methods = summary["methods"]
    lines = ["| category | questions | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for g in summary["groups"]:
        stats = summary["by_group"][g]
        cells = [_f(stats[m][key], spec) + (suffix if stats[m][key] is not None else "") for m in methods]
        name = f"**{g}**" if g == "overall" else g
        lines.append(f"| {name} | {stats['baseline']['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_markdown(summary: dict, meta: dict) -> str:
    lines = ["# Method comparison (greedy, lossless)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "command"]
    lines += [f"- command: `{meta.get('command', '')}`", "",
              "Notes: mean accepted length = new tokens / verifier passes (target-model forward passes that emit "
              "tokens: 1.0 for plain decoding). Ours count them exactly; for HF methods a forward hook counts every "
              "call of the target model, the first (prompt) call included since it already emits the first token, "
              "and early_exit_assist's drafting calls (the same model cut to the exit layer) are told apart by the "
              "layer count and not counted. tokens/s = all new tokens / all wall seconds of the group (prefill "
              "included). speedup = tokens/s over the baseline's in the same run. matches baseline: `NO (k of n)` "
              "= k of n questions have a turn whose token ids differ from the baseline's.", "",
              "## Speedup over the baseline (tokens/s ratio, same run)", "",
              matrix_markdown(summary, "speedup", ".2f", "x"), "",
              "## Mean accepted length (tokens per target-model pass)", "",
              matrix_markdown(summary, "mean_accepted", ".2f"), "",
              "Every method matched the baseline on every question." if summary["lossless"] else
              "**Some method's output differed from the baseline's: see `matches baseline` below.**", ""]
    for g in summary["groups"]:
        stats = summary["by_group"][g]
        n = stats["baseline"]["questions"]
        lines += [f"## {g} ({n} questions)", "",
                  "| method | new tokens | mean accepted length | tokens/s | speedup | matches baseline |",
                  "|---|---:|---:|---:|---:|---|"]
        for m in summary["methods"]:
            s = stats[m]
            lines.append(f"| {m} | {s['new_tokens']} | {_f(s['mean_accepted'], '.2f')} | "
                         f"{_f(s['tokens_per_s'], '.2f')} | {_f(s['speedup'], '.2f')}x | {match_cell(s)} |")
        lines.append("")
    return "\n".join(lines)


def plot_speedup(summary: dict, png) -> Path:
    """Grouped bars: one group per category (and overall), one bar per method, speedup over the baseline."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    groups, methods = summary["groups"], summary["methods"]
    x, width = np.arange(len(groups)), 0.8 / len(methods)
    fig = Figure(figsize=(max(7.0, 1.1 * len(groups) + 3), 4.5), constrained_layout=True)
    ax = fig.subplots()
    for j, m in enumerate(methods):
        ys = [summary["by_group"][g][m]["speedup"] for g in groups]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, [np.nan if y is None else y for y in ys], width, label=m)
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel("speedup over baseline (tokens/s ratio)")
    ax.set_title("Greedy decoding methods vs our baseline")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png


def write_report(out: Path, records: list[dict], methods: list[str], meta: dict) -> dict:
    summary = summarize(records, methods)
    (out / "table.md").write_text(table_markdown(summary, meta))
    (out / "summary.json").write_text(json.dumps({"meta": meta, **summary}, indent=2))
    plot_speedup(summary, out / "speedup.png")
    return summary


# ----------------------------------------------------------------------------------------------- main
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
            "drafting": f"dvi: {args.drafter} drafter, {args.draft_policy} policy; dvi_self / ngram: "
                        f"{args.draft_policy} policy; n-grams {args.ngram_min}..{args.ngram_max}; drafter vocabulary "
                        f"{args.drafter_vocab or 'full'}",
            "prompt_lookup": "prompt_lookup_num_tokens=6",
            "early_exit_assist": f"assistant_early_exit={args.exitlayer}, HF draft defaults: {hf_assist_defaults(lm)}",
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
            "command": shlex.join(["python", "-m", "scripts.benchmark_methods", *args.argv])}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    from evaluation.questions import chat_prompt_ids, load_questions
    from kangaroo.greedy import eos_ids_of
    from kangaroo.lossless import judge
    from kangaroo.model_loading import load_causal_lm, load_tokenizer

    questions = select_questions(load_questions(args.question_file), args.per_category)
    out = Path(args.out)
    config = {k: getattr(args, k, None) for k in CHECKED if k != "threads"} | {"threads": torch.get_num_threads()}
    check_config(out, config, args.overwrite)
    ensure_lora(args)
    raw = out / "raw.jsonl"
    done = {r["question_id"] for r in read_raw(raw)}

    tokenizer = load_tokenizer(args.model_id)
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    validate_against_config(args, lm.config)
    eos = eos_ids_of(tokenizer, lm.config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=None)
    methods = make_methods(args, lm, build_models(args, lm, tokenizer), eos, pad_id, TargetCalls(lm))
    warm = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}], args.model_id, device=args.device)[:, -8:]
    for fn in methods.values():  # untimed: lazy initialisation is not charged to the first question
        fn(warm)

    from tqdm import tqdm

    names = list(methods)
    for i, q in enumerate(tqdm(questions, desc="benchmark", disable=args.no_progress, dynamic_ncols=True)):
        if q["question_id"] not in done:
            append_raw(raw, decode_question(q, rotated(names, i), methods, tokenizer, args,
                                            judge_fn=lambda ids, ref, out: judge(lm, ids, ref, out)))

    wanted = {q["question_id"] for q in questions}
    records = [r for r in read_raw(raw) if r["question_id"] in wanted]
    summary = write_report(out, records, names, run_meta(args, lm, len(records)))
    overall = summary["by_group"]["overall"]
    for m in names:
        s = overall[m]
        print(f"[{m}] {s['new_tokens']} tokens, {_f(s['tokens_per_s'], '.2f')} tok/s, speedup "
              f"{_f(s['speedup'], '.2f')}x, mean accepted {_f(s['mean_accepted'], '.2f')}, matches baseline "
              f"{match_cell(s)}")
    print(f"[benchmark] {out / 'table.md'}, {out / 'summary.json'}, {out / 'speedup.png'}")
    if not summary["lossless"]:
        print("error: some method's output differs from the baseline's (see 'matches baseline' in the table)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
