"""The Python work of a decode loop, apart from the engine's own time: per block (a greedy step, or one
draft -> verify -> accept of ``kangaroo_generate``), split into the drafting phase, the verify phase and the loop
around them (accept, policy, calibration, bookkeeping), on real Spec-Bench prompts.

    python -m scripts.profile overhead --model-id smollm2-135m --num-threads 1 --questions 6 --out runs/engine/overhead

Thread CPU time (``time.thread_time``: the machine's other processes do not count; with one thread every engine
call runs on it). "engine" is the time inside the engine's calls (the stack, the head matmul, the final norm); the
rest of a phase is Python and PyTorch dispatch. The prompt's prefill (the plain path) is left out. Methods: greedy,
self (the self-drafter under the threshold rule) and hybrid (the deployed drafting: n-gram first, goodput policy),
both with the identity drafter head. Writes OUT/overhead.md and OUT/overhead.json.
"""
from __future__ import annotations

import time

import torch

from evaluation.cli import OneLineParser, apply_runtime, resolve_device_dtype, resolve_model_id, resolve_question_file
from scripts.profile.report import command, mode_parser, write_report


def build_parser() -> OneLineParser:
    p = mode_parser("overhead", __doc__)
    p.add_argument("--questions", type=int, default=6, help="Spec-Bench questions, spread over the file")
    p.add_argument("--question-file", default=None, help="default: the Spec-Bench question.jsonl")
    p.set_defaults(bench_name="spec_bench")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", default="runs/engine/overhead")
    return p


class Clock:
    """Thread CPU seconds spent inside the engine's calls and inside named phases (each minus the engine in it)."""

    def __init__(self):
        self.engine, self.phases = 0.0, {}

    def engine_call(self, fn):
        def run(*a, **k):
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                self.engine += time.thread_time() - t0
        return run

    def phase(self, name: str, fn):
        def run(*a, **k):
            t0, e0 = time.thread_time(), self.engine
            try:
                return fn(*a, **k)
            finally:
                dt, de = time.thread_time() - t0, self.engine - e0
                py, eng = self.phases.get(name, (0.0, 0.0))
                self.phases[name] = (py + dt - de, eng + de)
        return run


class TimedStack:
    def __init__(self, stack, clock: Clock):
        self.forward = clock.engine_call(stack.forward)
        self.forward_batch = clock.engine_call(stack.forward_batch)


def instrument(clock: Clock) -> None:
    """Route the engine's calls and the loops' phases through ``clock`` (this process only)."""
    import kangaroo.drafters.self_drafter as self_drafter
    import kangaroo.greedy as greedy
    import kangaroo.packed_head as packed_head
    import kangaroo.speculative as spec
    from kangaroo import cpu_engine

    stacks, stack_for = {}, cpu_engine.stack_for
    cpu_engine.stack_for = lambda layers: (lambda s: None if s is None else stacks.setdefault(id(s), TimedStack(
        s, clock)))(stack_for(layers))
    cpu_engine.linear, cpu_engine.rmsnorm = clock.engine_call(cpu_engine.linear), clock.engine_call(cpu_engine.rmsnorm)
    packed_head.PackedHead.top_k = clock.engine_call(packed_head.PackedHead.top_k)  # the drafter head's kernel
    self_drafter.self_draft = clock.phase("draft", self_drafter.self_draft)
    spec.verify = clock.phase("verify", spec.verify)
    spec.prefill = clock.phase("prefill", spec.prefill)
    run_layers = greedy.run_layers
    greedy.run_layers = lambda layers, h, *a: (clock.phase("prefill", run_layers) if h.shape[1] > 1 else run_layers)(
        layers, h, *a)


def decode_all(decode, prompts, clock: Clock) -> dict:
    clock.engine, clock.phases = 0.0, {}
    blocks = tokens = 0
    t0 = time.thread_time()
    for ids in prompts:
        r = decode(ids)
        blocks, tokens = blocks + len(r.accept_lengths), tokens + len(r.tokens)
    pre_py, pre_engine = clock.phases.pop("prefill", (0.0, 0.0))
    total, engine = time.thread_time() - t0 - pre_py - pre_engine, clock.engine - pre_engine
    per = {k: round(v[0] / blocks * 1e3, 3) for k, v in clock.phases.items()}
    python = total - engine
    return {"blocks": blocks, "tokens": tokens, "ms_per_block": round(total / blocks * 1e3, 3),
            "engine_ms_per_block": round(engine / blocks * 1e3, 3),
            "python_ms_per_block": round(python / blocks * 1e3, 3),
            "python_share": round(python / total, 3), "python_by_phase_ms": per}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve_model_id(args)
    resolve_device_dtype(args)
    resolve_question_file(args)
    apply_runtime(args)
    from evaluation.questions import chat_prompt_ids, load_questions
    from kangaroo.draft_policy import make_policy
    from kangaroo.drafters import make_drafter
    from kangaroo.greedy import eos_ids_of, greedy_decode
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm, load_tokenizer
    from kangaroo.speculative import kangaroo_generate
    from kangaroo.verify_cost import measure_cost_curve

    tok, lm = load_tokenizer(args.model_id), load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    km = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
    qs = load_questions(args.question_file)
    qs = [qs[i * len(qs) // args.questions] for i in range(args.questions)]
    prompts = [chat_prompt_ids(tok, [{"role": "user", "content": q["turns"][0]}], args.model_id) for q in qs]
    eos, n = eos_ids_of(tok, lm.config), args.max_new_tokens
    cost = measure_cost_curve(km, args.steps + 1)
    drafter = {k: make_drafter(k, args.steps, lambda p=p: make_policy(p, args.threshold, cost, 4.0))
               for k, p in (("self", "threshold"), ("hybrid", "goodput"))}
    methods = {"greedy": lambda ids: greedy_decode(lm, ids, n, eos),
               "self/threshold": lambda ids: kangaroo_generate(km, ids, n, eos, drafter=drafter["self"]),
               "hybrid/goodput": lambda ids: kangaroo_generate(km, ids, n, eos, drafter=drafter["hybrid"])}
    clock = Clock()
    for m in methods.values():
        m(prompts[0][:, -8:])  # untimed warm-up
    instrument(clock)
    res = {name: decode_all(fn, prompts, clock) for name, fn in methods.items()}
    write(args, res, argv)
    return 0


def write(args, res: dict, argv) -> None:
    lines = ["| loop | blocks | ms / block | engine | Python | Python share | Python by phase (ms / block) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in res.items():
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["python_by_phase_ms"].items()) or "-"
        lines.append(f"| {name} | {r['blocks']} | {r['ms_per_block']:.2f} | {r['engine_ms_per_block']:.2f} | "
                     f"{r['python_ms_per_block']:.2f} | {r['python_share'] * 100:.0f}% | {phases} |")
    md = (f"# Python work per block\n\n- command: `{command('overhead', argv)}`\n- threads: {torch.get_num_threads()}"
          "\n\n" + "\n".join(lines) + "\n")
    write_report(args.out, "overhead", md, res)
