"""Kangaroo self-speculative greedy decoding, with DVI online drafter training (lossless either way).

    # plain Kangaroo (identity adapter, the verifier's own head drafts)
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --adapter-path none \\
        --exitlayer 2 --threshold 0.6 --steps 6 --temperature 0.0 --seed 123
    # DVI: train the LoRA drafter head online over a ShareGPT stream
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --dvi-online true \\
        --prompts-jsonl assets/sharegpt.jsonl --max-prompts 300 --save-lora-path runs/checkpoints
    # deploy a trained drafter
    python -m evaluation.inference_kangaroo --model-id smollm2-135m --dvi-online false \\
        --load-lora runs/checkpoints/final.pt --metrics-out runs/benchmark/metrics.csv
"""
from __future__ import annotations

import json

import torch

from evaluation.eval_loop import run_questions
from kangaroo.cli_utils import parse_args, run_main, validate_against_config
from kangaroo.drafter_config import apply_drafter_vocab, build_drafter
from kangaroo.greedy import eos_ids_of
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_tokenizer
from kangaroo.speculative import kangaroo_generate


def build_model(args) -> KangarooModel:
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    validate_against_config(args, lm.config)
    return KangarooModel(model_id=args.model_id, adapter_mode=args.adapter_mode, adapter_path=args.adapter_path,
                         exit_layer=args.exitlayer, base_model=lm)


def main(argv=None) -> int:
    args = parse_args("kangaroo", argv, description=__doc__.splitlines()[0])
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model_id)
    model = build_model(args)
    eos = eos_ids_of(tokenizer, model.config)
    apply_drafter_vocab(args, model, tokenizer)
    learner = None
    if args.dvi_online or args.load_lora:
        from dvi.online_loop import DVILearner

        model.attach_drafter_head(r=args.dvi_lora_r, alpha=args.dvi_lora_alpha)
        learner = DVILearner(model, args)
    drafter = build_drafter(args, model)
    print(f"[drafter] {json.dumps(drafter.metadata())}"
          + (f", drafter vocabulary {args.drafter_vocab}" if args.drafter_vocab else ""))

    def decode(ids, hook=True):
        return kangaroo_generate(model, ids, args.max_new_tokens, eos, drafter=drafter,
                                 on_block=learner.on_block if (learner and hook) else None)

    method = "dvi" if learner else "kangaroo"
    finished = False
    try:
        run_questions(args, method, decode, tokenizer, warmup=lambda ids: decode(ids, hook=False))
        finished = True
    finally:
        if learner is not None:  # also on Ctrl-C: the state so far is saved, marked unfinished, for a resume
            summary = learner.finish(finished)
            print(f"[dvi] {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
