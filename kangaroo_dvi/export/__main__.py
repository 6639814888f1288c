"""``python -m kangaroo_dvi.export CKPT [--peft DIR] [--standalone DIR] [--standalone-attention full|window]``:
write a trained drafter (a DVI checkpoint, e.g. runs/main/checkpoints/final.pt) as a PEFT adapter and/or a
standalone Hugging Face draft model (see kangaroo_dvi/export/). The model is the one the checkpoint was trained on
unless --model-id names another (a copy of it in another folder)."""
from __future__ import annotations

import sys

from common.command_line import OneLineParser, fail, run_main
from kangaroo_dvi.export.standalone import ATTENTION


def build_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="DVI drafter checkpoint (.pt written by --save-lora-path)")
    p.add_argument("--model-id", default=None, help="the base model (default: the checkpoint's model_id)")
    p.add_argument("--peft", default=None, metavar="DIR", help="write the LoRA drafter head as a PEFT adapter here")
    p.add_argument("--standalone", default=None, metavar="DIR",
                   help="write the drafter as a Hugging Face causal LM folder here")
    p.add_argument("--standalone-attention", default="full", choices=ATTENTION,
                   help="the trained adapter's layer: full (Llama, full attention) or window (Qwen2 config with the "
                        "adapter's sliding window: exact)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.peft and not args.standalone:
        fail("nothing to write: pass --peft DIR and/or --standalone DIR")
    from kangaroo.model_loading import load_tokenizer
    from kangaroo_dvi.export import export_peft, export_standalone, load_drafter

    model = load_drafter(args.checkpoint, args.model_id)
    if args.peft:
        print(f"[export] PEFT adapter: {export_peft(model, args.peft, args.checkpoint)}")
    if args.standalone:
        out = export_standalone(model, args.standalone, load_tokenizer(model.model_id), args.standalone_attention,
                                args.checkpoint)
        print(f"[export] standalone drafter: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
