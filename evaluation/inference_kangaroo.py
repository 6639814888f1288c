"""Kangaroo self-speculative greedy decoding, with DVI online drafter training (lossless either way).

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

import torch

from evaluation.cli import apply_runtime, drafter_config, dvi_config, parse_args, run_main, validate_against_config
from evaluation.eval_loop import run_questions
from evaluation.greedy_reference import GreedyReference
from kangaroo.cache_pool import ReusableCaches
from kangaroo.drafter_config import apply_drafter_vocab, attach_feature, build_drafter
from kangaroo.drafters.counters import source_summary
from kangaroo.greedy import eos_ids_of
from kangaroo.probe_gate import gate_counters
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_tokenizer
from kangaroo.speculative import kangaroo_generate


def build_model(args) -> KangarooModel:
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    validate_against_config(args, lm.config)
    return KangarooModel(model_id=args.model_id, adapter_mode=args.adapter_mode, adapter_path=args.adapter_path,
                         exit_layer=args.exitlayer, base_model=lm, adapter_window=args.dvi_adapter_window)


def prepare_checkpoints(args) -> None:
    """Online runs: the checkpoint folder must be writable now (not at the first save, after the training), and
    the same command run again resumes from the newest checkpoint there (unless --load-lora or --overwrite)."""
    if not args.dvi_online:
        return
    from dvi.checkpoint import check_writable_dir, latest_checkpoint

    check_writable_dir(args.save_lora_path)
    if not args.load_lora and not args.overwrite:
        found = latest_checkpoint(args.save_lora_path)
        if found is not None:
            print(f"[dvi] resuming from {found} (the newest checkpoint in --save-lora-path; pass --overwrite to "
                  "start afresh)")
            args.load_lora = str(found)


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
    apply_runtime(args)
    prepare_checkpoints(args)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model_id)
    model = build_model(args)
    eos = eos_ids_of(tokenizer, model.config)
    dcfg = drafter_config(args)
    vocab = apply_drafter_vocab(dcfg, model, tokenizer)
    learner, log, hook = None, None, None
    if args.dvi_online or args.load_lora:
        from dvi.online_loop import DVILearner
        from kangaroo.drafter_head import attach_drafter_head

        cfg = dvi_config(args)
        attach_drafter_head(model, r=cfg.lora.r, alpha=cfg.lora.alpha)
        attach_feature(model, dcfg, cfg.lora, args.dvi_online)
        learner = DVILearner(model, cfg)
        hook = learner.on_block
    else:
        attach_feature(model, dcfg, None, False)  # refuses: an untrained feature drafter drafts nothing useful
        if args.metrics_out:
            log, hook = plain_metrics(model, args)
    pool = ReusableCaches(model.new_caches)
    drafter = build_drafter(dcfg, model, online=args.dvi_online)
    print(f"[drafter] {json.dumps(drafter.metadata())}, drafter vocabulary "
          f"{model.config.vocab_size if vocab is None else len(vocab)}, head {model.head_precision}")
    ref = GreedyReference(model.base_model, args.max_new_tokens, eos, args.device) if args.compare_greedy else None

    def decode(ids, use_hook=True):
        dense = learner is not None and use_hook and learner.prefill_positions > 0
        return kangaroo_generate(model, ids, args.max_new_tokens, eos, drafter=drafter,
                                 on_block=hook if use_hook else None, cache_pool=pool,
                                 on_prefill=learner.on_prefill if dense else None,
                                 prefill_positions=learner.prefill_positions if dense else 0)

    method = "dvi" if learner else "kangaroo"
    finished = False
    try:
        run_questions(args, method, decode, tokenizer, warmup=lambda ids: warmup(decode, ref, ids),
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
