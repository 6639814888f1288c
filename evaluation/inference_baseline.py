"""Vanilla decoding with a KV cache over a question file, greedy or sampled: the reference output and speed.

    python -m evaluation.inference_baseline --model-id smollm2-135m --question-end 10 --max-new-tokens 128
    # plain sampling: every prompt with the sampling seed --seed (kangaroo/sampling.py)
    python -m evaluation.inference_baseline --model-id smollm2-135m --temperature 0.7 --top-p 0.95 --seed 1
"""
from __future__ import annotations

import torch

from evaluation.cli import apply_runtime, parse_args, run_main, sampling_params, validate_against_config
from evaluation.eval_loop import run_questions
from kangaroo.cache_pool import ReusableCaches, greedy_cache_factory
from kangaroo.greedy import eos_ids_of, greedy_decode
from kangaroo.model_loading import load_causal_lm, load_tokenizer


def main(argv=None) -> int:
    args = parse_args("baseline", argv, description=__doc__.splitlines()[0])
    apply_runtime(args)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model_id)
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    validate_against_config(args, lm.config)
    eos = eos_ids_of(tokenizer, lm.config)
    pool = ReusableCaches(greedy_cache_factory(lm))  # one KV cache for the whole run
    sampling = sampling_params(args)
    run_questions(args, "baseline", lambda ids: greedy_decode(lm, ids, args.max_new_tokens, eos, pool, sampling),
                  tokenizer, max_positions=lm.config.max_position_embeddings)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
