"""Kangaroo self-speculative greedy decoding over a question file (lossless: same tokens as the baseline).

    python -m evaluation.inference_kangaroo --model-id smollm2-135m --adapter-path none \
        --exitlayer 2 --threshold 0.6 --steps 6 --temperature 0.0 --seed 123
"""
from __future__ import annotations

import torch

from evaluation.eval_loop import run_questions
from kangaroo.cli_utils import parse_args, run_main, validate_against_config
from kangaroo.greedy import eos_ids_of
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_tokenizer
from kangaroo.speculative import kangaroo_generate


def main(argv=None) -> int:
    args = parse_args("kangaroo", argv, description=__doc__.splitlines()[0])
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model_id)
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    validate_against_config(args, lm.config)
    model = KangarooModel(model_id=args.model_id, adapter_mode=args.adapter_mode, adapter_path=args.adapter_path,
                          exit_layer=args.exitlayer, base_model=lm)
    eos = eos_ids_of(tokenizer, lm.config)

    def decode(ids):
        return kangaroo_generate(model, ids, args.max_new_tokens, eos, steps=args.steps, threshold=args.threshold)

    run_questions(args, "kangaroo", decode, tokenizer)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
