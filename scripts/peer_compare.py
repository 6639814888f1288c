"""Our greedy and deployed ``dvi`` against llama.cpp's plain and prompt-lookup decoding: the same Spec-Bench
questions, the same weights (the bundled GGUF), the same thread count, one run.

    bash scripts/setup/build_llamacpp.sh                      # once: llama.cpp's tools into .llamacpp/build/bin
    python -m scripts.peer_compare --model-id smollm2-135m --per-category 2 --max-new-tokens 64 --num-threads 1 \\
        --load-lora runs/main/checkpoints/final.pt --out runs/peer

Methods (``--peer-methods``), every one on every question, in an order that rotates per question:

  greedy          our greedy loop (kangaroo.greedy) reading the weights as --weights says (stored: the GGUF's blocks)
  greedy_float32  the same loop on the float32 weights (the engine before issue 18): the answers every method of
                  ours must equal, token for token
  dvi             the deployed default (benchmark method ``dvi``: hybrid drafter, goodput policy, --load-lora)
  dvi_identity    the same drafting with the identity drafter head (no checkpoint needed)
  llama_plain     llama.cpp ``llama-lookup`` with no drafts (--spec-draft-n-max 0): plain greedy decoding
  llama_lookup    llama.cpp ``llama-lookup`` (prompt lookup, up to --lookup-draft tokens a block)

Prompts: the first turn, rendered by the model's chat template exactly as our drivers render it
(``evaluation.questions.chat_prompt_ids``); llama.cpp reads the rendered text and its tokens are checked against
ours (``llama-tokenize``). Tokens/s: new tokens / (prefill + decode) per method, summed over the questions, model
loading excluded on both sides; llama.cpp runs until it has >= --max-new-tokens tokens (it may overshoot by a block)
and its decode time is prorated to --max-new-tokens. llama.cpp computes Q4_1 x Q8_1 integer dot products, not our
float32 FMA chains, so its answers may part from ours at a near-tie: reported as the length of the common prefix.
Writes OUT/raw.jsonl, OUT/table.md and OUT/summary.json.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PEER_METHODS = ("greedy", "greedy_float32", "dvi", "dvi_identity", "llama_plain", "llama_lookup")
LLAMA = {"llama_plain": 0}  # method -> --spec-draft-n-max (llama_lookup: --lookup-draft)


def peer_args(argv: list[str]):
    """Our flags, and the benchmark's (scripts/benchmark/cli.py: model, questions, drafter, --load-lora)."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--peer-methods", default=",".join(PEER_METHODS))
    p.add_argument("--llamacpp-bin", default=str(REPO / ".llamacpp" / "build" / "bin"))
    p.add_argument("--gguf", default=None, help="the .gguf llama.cpp reads (default: the one --model-id's blocks are)")
    p.add_argument("--lookup-draft", type=int, default=8, help="llama_lookup: at most this many drafted tokens")
    ours, rest = p.parse_known_args(argv)
    from evaluation.cli import fail
    from scripts.benchmark.cli import parse_args

    ours.methods = [m.strip() for m in ours.peer_methods.split(",") if m.strip()]
    if not ours.methods or any(m not in PEER_METHODS for m in ours.methods):
        fail(f"--peer-methods: pick from {','.join(PEER_METHODS)}")
    args = parse_args(rest + ["--methods", "baseline,dvi" if "dvi" in ours.methods else "baseline"])
    from evaluation.cli import apply_runtime

    apply_runtime(args)
    if any(m.startswith("llama") for m in ours.methods) and not (Path(ours.llamacpp_bin) / "llama-lookup").is_file():
        fail(f"no llama-lookup in {ours.llamacpp_bin}: run `bash scripts/setup/build_llamacpp.sh` first")
    return ours, args


# ----------------------------------------------------------------------------------------------- llama.cpp
def llama_tokens(bin_dir: str, gguf: str, prompt_file: str) -> list[int]:
    out = subprocess.run([str(Path(bin_dir) / "llama-tokenize"), "-m", gguf, "-f", prompt_file, "--ids",
                          "--no-escape"], capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse_lookup(stdout: bytes, stderr: str, prompt: str) -> dict:
    """llama-lookup's answer (the bytes it printed after the prompt) and its timings."""
    enc = re.search(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds", stderr)
    dec = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", stderr)
    if not enc or not dec:
        raise RuntimeError(f"llama-lookup printed no timings: {stderr.strip().splitlines()[-3:]}")
    text = stdout.decode("utf-8", errors="replace").removeprefix("\n\n")
    if not text.startswith(prompt):
        raise RuntimeError("llama-lookup did not echo the prompt as given: its tokens differ from ours")
    return {"text": text[len(prompt):].removesuffix("\n\n"), "new_tokens": int(dec.group(1)),
            "prefill_s": float(enc.group(2)), "decode_s": float(dec.group(2))}


def llama_decode(bin_dir: str, gguf: str, prompt_file: str, prompt: str, n: int, draft: int, threads: int) -> dict:
    cmd = [str(Path(bin_dir) / "llama-lookup"), "-m", gguf, "-f", prompt_file, "-n", str(n - 1), "-t", str(threads),
           "-tb", str(threads), "-c", "4096", "--temp", "0", "--top-k", "1", "--spec-draft-n-max", str(draft),
           "--no-escape"]
    r = subprocess.run(cmd, capture_output=True, check=True, timeout=1800)
    return parse_lookup(r.stdout, r.stderr.decode("utf-8", errors="replace"), prompt)


def prorated_seconds(r: dict, n: int) -> tuple[int, float]:
    """(tokens counted, seconds): at most ``n`` tokens, the decode time scaled to them."""
    k = min(n, r["new_tokens"])
    return k, r["prefill_s"] + r["decode_s"] * k / max(1, r["new_tokens"])


# ----------------------------------------------------------------------------------------------- ours
def our_methods(ours, args, tokenizer) -> tuple[dict, object]:
    """name -> decode(ids) -> (tokens, verifier passes); and the model (for the EOS ids)."""
    from kangaroo.greedy import eos_ids_of, greedy_decode
    from kangaroo.model_loading import load_causal_lm
    from scripts.benchmark.cli import ensure_lora
    from scripts.benchmark.methods import TargetCalls, build_models, make_methods

    ensure_lora(args)
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    eos = eos_ids_of(tokenizer, lm.config)
    bench = make_methods(args, lm, build_models(args, lm, tokenizer), eos, None, TargetCalls(lm))
    fns = {"greedy": bench["baseline"], "dvi": bench.get("dvi")}
    if "dvi_identity" in ours.methods:
        fns["dvi_identity"] = identity_hybrid(args, lm, eos)
    if "greedy_float32" in ours.methods:
        lm32 = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype, weights="float32")
        fns["greedy_float32"] = lambda ids: (lambda r: (r.tokens, r.steps, None))(
            greedy_decode(lm32, ids, args.max_new_tokens, eos))
    return {m: fns[m] for m in ours.methods if m in fns}, lm


def identity_hybrid(args, lm, eos):
    """decode(ids) with the deployed drafting (``--drafter``/``--draft-policy`` resolved as the benchmark's dvi) and
    the identity drafter head; a trained feature drafter in that chain is left out (this model has none)."""
    from dataclasses import replace

    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import build_drafter
    from kangaroo.drafters import chain_names
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.speculative import kangaroo_generate

    km = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
    cfg = drafter_config(args)
    drafter = build_drafter(replace(cfg, drafter=",".join(n for n in chain_names(cfg.drafter) if n != "feature")), km)

    def decode(ids):
        r = kangaroo_generate(km, ids, args.max_new_tokens, eos, drafter=drafter)
        return r.tokens, r.steps, None
    return decode


def decode_one(q: dict, order: list[str], fns: dict, ours, args, tokenizer, gguf: str) -> dict:
    """Every method on question ``q``: tokens or text, seconds, passes."""
    from evaluation.questions import chat_prompt_ids
    from kangaroo.timing import timed

    messages = [{"role": "user", "content": q["turns"][0]}]
    ids = chat_prompt_ids(tokenizer, messages, args.model_id, device=args.device)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    rec = {"question_id": q["question_id"], "category": q.get("category"), "prompt_tokens": ids.shape[1],
           "order": order}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt)
    if any(m.startswith("llama") for m in order):
        rec["llama_prompt_tokens_equal"] = llama_tokens(ours.llamacpp_bin, gguf, f.name) == ids[0].tolist()
    for m in order:
        if m.startswith("llama"):
            r = llama_decode(ours.llamacpp_bin, gguf, f.name, prompt, args.max_new_tokens,
                             LLAMA.get(m, ours.lookup_draft), torch.get_num_threads())
            k, s = prorated_seconds(r, args.max_new_tokens)
            rec[m] = {"text": r["text"], "new_tokens": k, "seconds": s, "raw": {x: r[x] for x in r if x != "text"}}
        else:
            (tokens, passes, *_), s = timed(lambda: fns[m](ids), args.device)
            rec[m] = {"tokens": tokens, "new_tokens": len(tokens), "seconds": s, "passes": passes,
                      "text": tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)}
    Path(f.name).unlink()
    return rec


# ----------------------------------------------------------------------------------------------- report
def common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def summarize(records: list[dict], methods: list[str], ref: str) -> dict:
    """Per method: tokens, seconds, tok/s, speed against llama_plain, answers equal to ``ref``'s."""
    out = {}
    for m in methods:
        toks = sum(r[m]["new_tokens"] for r in records)
        secs = sum(r[m]["seconds"] for r in records)
        if m.startswith("llama"):  # text: equal where ours is a prefix of its (it may run past the budget)
            same = sum(r[m]["text"].startswith(r[ref]["text"]) for r in records)
        else:
            same = sum(r[m]["tokens"] == r[ref]["tokens"] for r in records)
        passes = [r[m]["passes"] for r in records if r[m].get("passes")]
        prefix = sum(common_prefix(r[m]["text"], r[ref]["text"]) for r in records) / len(records)
        out[m] = {"new_tokens": toks, "seconds": round(secs, 3), "tokens_per_s": round(toks / secs, 2),
                  "answers_equal_reference": f"{same}/{len(records)}", "common_prefix_chars": round(prefix, 1),
                  "mean_committed_per_pass": round(toks / sum(passes), 3) if passes else None}
    base = out.get("llama_plain", out[methods[0]])["tokens_per_s"]
    for s in out.values():
        s["x_llama_plain"] = round(s["tokens_per_s"] / base, 3)
    return out


def table(summary: dict, ref: str) -> str:
    lines = [f"| method | tokens | seconds | tokens/s | x llama_plain | answers = {ref} | mean common prefix "
             "(chars) | committed per pass |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['new_tokens']} | {s['seconds']:.1f} | {s['tokens_per_s']:.2f} | "
                     f"{s['x_llama_plain']:.2f} | {s['answers_equal_reference']} | {s['common_prefix_chars']} | "
                     f"{s['mean_committed_per_pass'] or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, args = peer_args(argv)
    from evaluation.questions import load_questions
    from kangaroo.model_loading import load_tokenizer, resolve_model_source
    from scripts.benchmark.cli import select_questions
    from scripts.benchmark.methods import rotated

    gguf = ours.gguf or resolve_model_source(args.model_id).blocks_gguf
    if any(m.startswith("llama") for m in ours.methods) and not gguf:
        from evaluation.cli import fail

        fail(f"--model-id {args.model_id} is not read from a .gguf: pass --gguf FILE for llama.cpp")
    questions = select_questions(load_questions(args.question_file), args.per_category)
    tokenizer = load_tokenizer(args.model_id)
    fns, _ = our_methods(ours, args, tokenizer)
    warm = tokenizer("Hello there", return_tensors="pt").input_ids
    for fn in fns.values():  # untimed: lazy initialisation (the engine build, the cost curve) is not charged
        fn(warm)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with open(out / "raw.jsonl", "w") as raw:
        for i, q in enumerate(questions):
            records.append(decode_one(q, rotated(ours.methods, i), fns, ours, args, tokenizer, gguf))
            raw.write(json.dumps(records[-1]) + "\n")
            raw.flush()
    ref = "greedy_float32" if "greedy_float32" in ours.methods else ours.methods[0]
    summary = summarize(records, ours.methods, ref)
    meta = {"model": args.model_id, "gguf": gguf, "weights": args.weights, "threads": torch.get_num_threads(),
            "questions": len(records), "max new tokens": args.max_new_tokens,
            "dvi": args.load_lora if "dvi" in ours.methods else "not run",
            "llama prompt tokens equal ours": sum(r.get("llama_prompt_tokens_equal", True) for r in records),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": shlex.join(["python", "-m", "scripts.peer_compare", *argv])}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "methods": summary}, indent=1))
    (out / "table.md").write_text("".join(f"- {k}: {v}\n" for k, v in meta.items()) + "\n" + table(summary, ref))
    print(table(summary, ref))
    return 0


if __name__ == "__main__":
    from evaluation.cli import run_main

    raise SystemExit(run_main(main))
