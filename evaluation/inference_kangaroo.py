"""Kangaroo self-speculative decoding, greedy or sampled, with DVI online drafter training (lossless either way).

    # plain Kangaroo (identity adapter, the verifier's own head drafts)
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --adapter-path none \\
        --exitlayer 2 --threshold 0.6 --steps 6 --temperature 0.0 --seed 123
    # DVI: train the LoRA drafter head online over a ShareGPT stream (the same command again resumes it)
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --dvi-online true \\
        --prompts-jsonl assets/sharegpt.jsonl --max-prompts 300 --save-lora-path runs/checkpoints
    # train a Kangaroo adapter online with the LoRA head (it starts as the identity drafter)
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --dvi-online true --adapter-mode train \\
        --dvi-adapter-window 16 --prompts-jsonl assets/sharegpt.jsonl --save-lora-path runs/checkpoints
    # deploy a trained drafter (with its trained adapter, if it has one)
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --dvi-online false \\
        --load-lora runs/checkpoints/final.pt --metrics-out runs/benchmark/metrics.csv
"""
from __future__ import annotations

import itertools
import json

from evaluation.cli import parse_args, run_main, sampling_params, validate_against_config
from evaluation.eval_loop import run_questions
from evaluation.greedy_reference import GreedyReference
from kangaroo.cache_pool import ReusableCaches
from kangaroo.drafters.counters import source_summary
from kangaroo.probe_gate import gate_counters
from kangaroo.speculative import kangaroo_generate
from kangaroo_dvi.session import build_session
from kangaroo_dvi.session_flags import drafter_config, dvi_config, session_config


def open_session(args):
    """The session the flags describe (``kangaroo_dvi.session.build_session``, as the server and the library build
    theirs): a learner when training online or deploying a --load-lora checkpoint; an online run resumes from the
    newest checkpoint in --save-lora-path (unless --load-lora or --overwrite)."""
    learns = args.dvi_online or args.load_lora
    return build_session(session_config(args), drafter_config(args), dvi_config(args) if learns else None,
                         check_model=lambda config: validate_against_config(args, config))


def plain_metrics(model, args):
    """--metrics-out on a plain Kangaroo run: acceptance.csv and speed.csv as in a DVI run (no trainer.csv)."""
    from dvi.metrics import MetricsLogger
    from dvi.online_loop import calibrate_ar_ms, metrics_dir

    log = MetricsLogger(metrics_dir(args.metrics_out), max_k=args.steps, ar_ms_per_token=calibrate_ar_ms(model),
                        every=args.metrics_every)
    step = itertools.count(1)

    def on_block(blk):
        d, v = blk.draft, blk.verification
        log.log_block(next(step), blk.drafted, blk.accepted, len(blk.committed), d.ms + v.ms, d.ms, v.ms, 0.0,
                      top1_agree=blk.top1_agree, source=blk.source, asked_ms=blk.asked_ms)

    return log, on_block


def main(argv=None) -> int:
    args = parse_args("kangaroo", argv, description=__doc__.splitlines()[0])
    session = open_session(args)
    model, drafter, learner, log, hook = session.model, session.drafter, session.learner, None, None
    if learner is not None:
        hook = learner.on_block
    else:
        if args.metrics_out:
            log, hook = plain_metrics(model, args)
    pool = ReusableCaches(model.new_caches)
    vocab = model.drafter_vocab
    print(f"[drafter] {json.dumps(drafter.metadata())}, drafter vocabulary "
          f"{model.config.vocab_size if vocab is None else len(vocab)}, head {model.head_precision}")
    eos, sampling = session.eos, sampling_params(args)
    ref = (GreedyReference(model.base_model, args.max_new_tokens, eos, args.device, sampling)
           if args.compare_greedy else None)

    def decode(ids, use_hook=True):
        dense = learner is not None and use_hook and learner.prefill_positions > 0
        return kangaroo_generate(model, ids, args.max_new_tokens, eos, drafter=drafter,
                                 on_block=hook if use_hook else None, cache_pool=pool,
                                 on_prefill=learner.on_prefill if dense else None,
                                 prefill_positions=learner.prefill_positions if dense else 0, sampling=sampling)

    method = "dvi" if learner else "kangaroo"
    finished = False
    try:
        run_questions(args, method, decode, session.tokenizer, warmup=lambda ids: warmup(decode, ref, ids),
                      max_positions=model.config.max_position_embeddings, after_turn=ref and ref.after_turn)
        finished = True
        print(f"[drafter] verifier passes by draft source (share, tokens per pass): "
              f"{source_summary(drafter.by_source)}")
    finally:
        if learner is not None:  # also on Ctrl-C: the state so far is saved, marked unfinished, for a resume
            summary = learner.finish(finished)
            print(f"[dvi] {json.dumps(summary)}")
        if log is not None:
            log.close()
            print(f"[kangaroo] metrics: {log.out_dir}")
        if ref is not None:
            print(ref.line())
            print(f"[greedy-reference] {ref.write(reference_path(args))}")
    counters = gate_counters(drafter)
    if counters:
        print(f"[drafter] probe gate: {json.dumps(counters)}")
    return 0


def warmup(decode, ref, ids) -> None:
    decode(ids, use_hook=False)
    if ref is not None:
        ref.warm(ids)


def reference_path(args):
    """--compare-greedy writes METRICS/vs_greedy.json (next to the answer file without --metrics-out)."""
    from pathlib import Path

    from dvi.online_loop import metrics_dir

    if args.metrics_out or args.dvi_online or args.load_lora:
        return metrics_dir(args.metrics_out) / "vs_greedy.json"
    return Path(args.answer_file).with_suffix(".vs_greedy.json")


if __name__ == "__main__":
    raise SystemExit(run_main(main))
