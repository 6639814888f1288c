"""Phase 2 of the drafter sweep (``sweep.py``): greedy and every deployed variant decode each Spec-Bench question.

Each variant deploys its trained configuration's checkpoint (OUT/online/NAME/checkpoints/final.pt, frozen: the LoRA
merged into the packed head) with its draft steps and drafter kind under the goodput policy and the probe gate, as
``kangaroo.drafter_config.build_drafter`` builds the deployed drafter. Records go to OUT/deployed/raw.jsonl one
question at a time (a rerun with the same settings and checkpoints resumes; other settings are refused unless
--overwrite); the report is the benchmark's (``scripts.benchmark.report``), plus counters.json: each variant's probe
gate counters.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from common.atomic import atomic_write_text
from evaluation.cli import fail


def checkpoint(out, trained) -> Path:
    return Path(out) / "online" / trained.name / "checkpoints" / "final.pt"


def build_methods(args, lm, tokenizer, deployed) -> tuple[dict, dict]:
    """name -> decode(ids) -> (tokens, verifier passes, None, accept lengths), greedy first; and name -> drafter."""
    from kangaroo.cache_pool import ReusableCaches, greedy_cache_factory
    from kangaroo.drafter_config import DrafterConfig, build_drafter
    from kangaroo.greedy import eos_ids_of, greedy_decode
    from kangaroo.speculative import kangaroo_generate
    from kangaroo_dvi.session import NO_DRAFTER, build_session
    from kangaroo_dvi.session_config import SessionConfig

    eos, n, pool = eos_ids_of(tokenizer, lm.config), args.max_new_tokens, ReusableCaches(greedy_cache_factory(lm))

    def greedy(ids):
        r = greedy_decode(lm, ids, n, eos, pool)
        return r.tokens, r.steps, None, r.accept_lengths

    def ours(model, drafter):
        def decode(ids):
            r = kangaroo_generate(model, ids, n, eos, drafter=drafter)
            return r.tokens, r.steps, None, r.accept_lengths
        decode.drafter = drafter  # the benchmark keeps its verifier passes by draft source
        return decode

    models, methods, drafters = {}, {"baseline": greedy}, {}
    for v in deployed:
        cfg = DrafterConfig(model_id=args.model_id, drafter=v.drafter, draft_policy="goodput", steps=v.steps,
                            drafter_vocab=v.trained.vocab)
        if v.trained not in models:
            ck = checkpoint(args.out, v.trained)
            if not ck.is_file():
                fail(f"{ck} does not exist: run the online phase first (--phases online)")
            session_cfg = SessionConfig(model_id=args.model_id, device="cpu", dtype="float32", seed=None,
                                        drafter_checkpoint=str(ck))
            models[v.trained] = build_session(session_cfg, replace(cfg, exit_layer=v.trained.exit_layer),
                                              base_model=lm, tokenizer=tokenizer, drafting=NO_DRAFTER,
                                              print_fn=lambda *_: None).model
        drafters[v.name] = build_drafter(cfg, models[v.trained], print_fn=lambda *_: None)
        methods[v.name] = ours(models[v.trained], drafters[v.name])
    return methods, drafters


def settings(args, deployed, questions) -> dict:
    from scripts.experiments.runner import digest

    return {"model_id": args.model_id, "questions": [q["question_id"] for q in questions],
            "max_new_tokens": args.max_new_tokens, "threads": args.num_threads, "variants": [v.name for v in deployed],
            "checkpoints": {v.trained.name: digest(checkpoint(args.out, v.trained)) for v in deployed}}


def run_deployed(args, deployed, command: str) -> bool:
    import torch

    from evaluation.cli import resolve_question_file
    from evaluation.questions import chat_prompt_ids, load_questions
    from kangaroo.lossless import judge
    from kangaroo.model_loading import load_causal_lm, load_tokenizer
    from kangaroo.probe_gate import gate_counters
    from scripts.benchmark.cli import select_questions
    from scripts.benchmark.methods import decode_question, rotated
    from scripts.benchmark.report import write_report
    from scripts.benchmark.store import raw_store

    torch.set_num_threads(args.num_threads)
    q_args = SimpleNamespace(question_file=args.question_file, bench_name="spec_bench", prompts_jsonl=None)
    resolve_question_file(q_args)
    questions = select_questions(load_questions(q_args.question_file), args.per_category)
    out = Path(args.out) / "deployed"
    out.mkdir(parents=True, exist_ok=True)
    raw, want = raw_store(out), settings(args, deployed, questions)
    cfg_path = out / "config.json"
    if args.overwrite:
        raw.reset()
    elif cfg_path.is_file() and (out / "raw.jsonl").exists() and json.loads(cfg_path.read_text()) != want:
        fail(f"{out} holds a run with other settings or checkpoints: pass --overwrite or another --out")
    atomic_write_text(cfg_path, json.dumps(want, indent=1))
    tokenizer = load_tokenizer(args.model_id)
    lm = load_causal_lm(args.model_id, device="cpu", dtype="float32")
    methods, drafters = build_methods(args, lm, tokenizer, deployed)
    warm = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}], args.model_id)[:, -8:]
    for fn in methods.values():
        fn(warm)
    names, done = list(methods), raw.done_ids()
    q_ns = SimpleNamespace(all_turns=False, model_id=args.model_id, device="cpu")
    for i, q in enumerate(questions):
        if q["question_id"] not in done:
            raw.append(decode_question(q, rotated(names, i), methods, tokenizer, q_ns,
                                       judge_fn=lambda ids, ref, o: judge(lm, ids, ref, o)))
            if not args.no_progress:
                print(f"[sweep] deployed: question {i + 1}/{len(questions)}", flush=True)
    wanted = {q["question_id"] for q in questions}
    records = [r for r in raw.records() if r["question_id"] in wanted]
    gates = {n: gate_counters(d).get("self", {}) for n, d in drafters.items()}
    atomic_write_text(out / "counters.json", json.dumps(gates, indent=1))
    meta = {"model": args.model_id, "questions": len(records), "per category": args.per_category, "turns": "first",
            "max new tokens": args.max_new_tokens, "threads": args.num_threads, "command": command}
    return write_report(out, [records], names, meta)["lossless"]
