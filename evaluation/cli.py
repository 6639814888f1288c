"""The one source of truth for command-line flags, shared by every driver.

``build_parser(kind)`` gives the flags of a driver kind ("baseline" or "kangaroo"); ``parse_args``
parses and resolves them (legacy names, adapter mode, device/dtype); ``validate_against_config`` checks what
needs the model's config (exit layer, top-K). A wrong flag ends the program with one line naming the flag
and the fix, exit code 2.

Defaults follow the work plan's quick reference:
  Kangaroo  --exitlayer 2 --threshold 0.6 --steps 6
  Buffer    --dvi-store topk --dvi-topk 1024 --dvi-logits-dtype float16
            --dvi-buffer-size 2048 --dvi-batch-size 64
  Time cap  --max-online-train-ms 5
except the training settings (LoRA shape, lr, tau, schedule, cadence, loss terms, dense supervision): those come
from ``--dvi-settings`` (``dvi/settings.py``: ``tuned`` for the bundled small model by default, ``workplan`` for the
work plan's 7B values); a flag given explicitly wins.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import UserError
from dvi.online_trainer import PG_FORMS
from dvi.presets import PRESETS
from dvi.settings import DEFAULT as DEFAULT_SETTINGS, SETTINGS, settings as dvi_settings

REPO = Path(__file__).resolve().parent.parent
ABLATIONS = tuple(PRESETS)  # the loss presets are defined once, in dvi/presets.py
DTYPES = ("float32", "float16", "bfloat16")


def str2bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and name the fix."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see --help)\n")


def fail(msg: str) -> None:
    """Print one error line and exit 2."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def category_list(v: str) -> list[str]:
    """A comma-separated list of question categories (at least one)."""
    names = list(dict.fromkeys(c.strip() for c in str(v).split(",") if c.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated category names, got {v!r}")
    return names


def vocab_size(v: str) -> int:
    """``--drafter-vocab``: a token count, or auto (-1, ``kangaroo.drafter_config.AUTO_VOCAB``)."""
    if str(v).strip().lower() == "auto":
        return -1
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count or auto, got {v!r}") from None


# ----------------------------------------------------------------------------------------------- flag groups
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model-id", default=None,
                   help="Hugging Face id, local model folder, local .gguf file, or the alias 'smollm2-135m' "
                        "(the bundled SmolLM2-135M-Instruct). Required.")
    g.add_argument("--model-path", default=None, help="legacy name of --model-id; if given it must equal it")
    g.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help="default: float32 on cpu, float16 on cuda")
    g.add_argument("--num-threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own choice); 1 lets two runs share 2 cores cleanly")
    g.add_argument("--engine", default="auto", choices=("auto", "plain"),
                   help="auto: decode steps and verify passes run the lean C++ CPU engine where it applies "
                        "(CPU, float32; kangaroo/cpu_engine.py); plain: PyTorch ops only")


def add_exitlayer_arg(g) -> None:
    g.add_argument("--exitlayer", type=int, default=2, help="k: the first k layers form the drafter")


def add_speculation_args(g) -> None:
    """--exitlayer, --threshold, --steps: the Kangaroo block, for drivers and benchmark scripts alike."""
    add_exitlayer_arg(g)
    g.add_argument("--threshold", type=float, default=0.6,
                   help="stop drafting a block when the drafter's top-1 probability falls under this")
    g.add_argument("--steps", type=int, default=6, help="at most this many drafted tokens per block")


def add_drafter_args(g) -> None:
    """Who drafts and when to stop (kangaroo/drafters.py, kangaroo/draft_policy.py, kangaroo/drafter_config.py)."""
    g.add_argument("--drafter", default="auto", choices=("auto", "self", "ngram", "hybrid"),
                   help="self: shallow layers + drafter head; ngram: prompt lookup; hybrid: n-gram match first, "
                        "self otherwise; auto: hybrid")
    g.add_argument("--draft-policy", default="auto", choices=("auto", "threshold", "goodput"),
                   help="threshold: Kangaroo's --threshold rule (>= 1 token per block); goodput: draft a token only "
                        "if expected committed tokens per ms rises (measured verify-cost curve); auto: goodput")
    g.add_argument("--ngram-min", type=int, default=1, help="shortest n-gram the n-gram drafter matches")
    g.add_argument("--ngram-max", type=int, default=3, help="longest n-gram the n-gram drafter matches (tried first)")
    g.add_argument("--cost-curve", default="",
                   help="goodput: JSON verify-cost curve to read; if the file does not exist the run measures the "
                        "curve at startup and writes it there (default: measure, do not save)")
    g.add_argument("--goodput-prior", type=float, default=4.0,
                   help="goodput: weight (in observations) of the drafter's raw confidence as the acceptance prior")
    g.add_argument("--drafter-vocab", type=vocab_size, default="auto",
                   help="pruned drafter head (FR-Spec): draft only the N most frequent tokens; 0: full vocabulary; "
                        "auto: that of the --load-lora checkpoint, else 8192 where runs/subvocab has the model's counts")
    g.add_argument("--probe-gate", type=str2bool, default=True, metavar="{true,false}",
                   help="goodput: ask the self-drafter only when a model of what is already known (the verifier's "
                        "probability of its last token, recent payoff) says a probe can pay; false: fixed backoff")
    g.add_argument("--drafter-head-precision", default="auto", choices=("auto", "int8", "bf16", "float32"),
                   help="the drafter head's weights on the CPU engine (the verifier stays float32, so outputs do not "
                        "change): int8 (VNNI), bf16, float32; auto: int8 where the engine's kernel is built")
    g.add_argument("--drafter-vocab-file", default="",
                   help="token counts (python -m scripts.build_subvocab) for --drafter-vocab; default "
                        "runs/subvocab/<model>.counts.npz, counted from assets/sharegpt.jsonl when missing")


def add_kangaroo_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kangaroo (self-speculative decoding)")
    g.add_argument("--compare-greedy", action="store_true",
                   help="after each decoded turn, decode it greedily too (timed alike, outside the run's time): "
                        "the run's decode tokens/s against greedy on the same prompts, and every output checked "
                        "against greedy; written to METRICS/vs_greedy.json")
    g.add_argument("--adapter-path", default="none",
                   help="Kangaroo adapter checkpoint folder, or 'none' for the identity adapter (no file access)")
    g.add_argument("--adapter-mode", default="auto", choices=("auto", "none", "load", "train"),
                   help="load: the --adapter-path adapter, frozen; train: DVI trains an adapter online with the LoRA "
                        "head (starting as the identity drafter, or from --adapter-path); auto: train when --load-lora "
                        "holds a trained adapter, else load when --adapter-path is a path, else none")
    add_speculation_args(g)
    add_drafter_args(g)


def add_driver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("questions and answers (Spec-Bench layout)")
    g.add_argument("--bench-name", default="spec_bench", help="benchmark folder name (default spec_bench)")
    g.add_argument("--question-file", default=None,
                   help="question jsonl (default: data/BENCH/question.jsonl, then ../shared/data/BENCH/question.jsonl)")
    g.add_argument("--question-begin", type=int, default=None,
                   help="index of the first question (inclusive), among those --categories/--exclude-categories keep")
    g.add_argument("--question-end", type=int, default=None,
                   help="index of the last question (exclusive), among those --categories/--exclude-categories keep")
    g.add_argument("--categories", type=category_list, default=None, metavar="A,B",
                   help="only questions of these categories (comma-separated; applied before the index range)")
    g.add_argument("--exclude-categories", type=category_list, default=None, metavar="A,B",
                   help="no question of these categories (comma-separated; applied before the index range)")
    g.add_argument("--answer-file", default=None,
                   help="answer jsonl (default: runs/answers/BENCH/MODEL-METHOD.jsonl); existing answers are kept "
                        "and their questions skipped unless --overwrite")
    g.add_argument("--overwrite", action="store_true", help="start the answer file afresh")
    g.add_argument("--max-new-tokens", type=int, default=1024)
    g.add_argument("--temperature", type=float, default=0.0, help="only 0.0 (greedy) is supported")
    g.add_argument("--seed", type=int, default=123)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--prompts-jsonl", default=None,
                   help="stream prompts from a ShareGPT jsonl (python -m data.sharegpt_stream --convert) instead of questions")
    g.add_argument("--max-prompts", type=int, default=None, help="use the first N usable prompts of --prompts-jsonl")


def add_dvi_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DVI (online drafter training)")
    g.add_argument("--dvi-online", type=str2bool, default=False, metavar="{true,false}",
                   help="train the LoRA drafter head while decoding (the output stays the verifier's greedy output)")
    g.add_argument("--dvi-batch-size", type=int, default=64)
    g.add_argument("--dvi-settings", default=DEFAULT_SETTINGS, choices=tuple(SETTINGS),
                   help="named values of the training flags left out: tuned (measured on the bundled SmolLM2-135M) "
                        "or workplan (the work plan's 7B values); see dvi/settings.py")
    g.add_argument("--dvi-update-every", type=int, default=None, help="one trainer step every N blocks")
    g.add_argument("--dvi-buffer-size", type=int, default=2048, help="ring-buffer capacity in samples")
    g.add_argument("--dvi-store", default="topk", choices=("full", "topk"))
    g.add_argument("--dvi-topk", type=int, default=1024)
    g.add_argument("--dvi-logits-dtype", default="float16", choices=("float16", "float32"))
    g.add_argument("--dvi-tau", type=float, default=None, help="KD temperature")
    g.add_argument("--dvi-warmup-steps", type=int, default=None, help="KD-only warm-up, in blocks")
    g.add_argument("--dvi-pg-lambda-max", type=float, default=None)
    g.add_argument("--dvi-kl-lambda0", type=float, default=None)
    g.add_argument("--dvi-kl-lambdamin", type=float, default=None)
    g.add_argument("--dvi-kd-top1", type=float, default=None,
                   help="weight of top-1 distillation (CE on the verifier's token at every row) in the KD term")
    g.add_argument("--dvi-pg-form", default=None, choices=PG_FORMS,
                   help="policy gradient: reinforce (the work plan's, on the drafted token) or expected (the exact "
                        "gradient of the acceptance probability, with the verifier's token)")
    g.add_argument("--dvi-entropy-weight", type=float, default=0.0)
    g.add_argument("--dvi-lr", type=float, default=None, help="AdamW learning rate of the LoRA tensors")
    g.add_argument("--dvi-lora-r", type=int, default=None,
                   help="LoRA rank (default: the --load-lora checkpoint's, else --dvi-settings')")
    g.add_argument("--dvi-lora-alpha", type=float, default=None,
                   help="LoRA scale alpha (default: the --load-lora checkpoint's, else --dvi-settings')")
    g.add_argument("--dvi-ablation", default=None, choices=ABLATIONS, help="loss preset (work plan step 11)")
    g.add_argument("--dvi-debug-hk", action="store_true", help="print hk count and bytes per block")
    g.add_argument("--dvi-adapter-window", type=int, default=None,
                   help="with --adapter-mode train: positions the adapter's attention sees (itself included), at draft "
                        "time and in training; each buffer slot keeps that many layer-k rows (default: the "
                        "--load-lora checkpoint's, else 16)")
    g.add_argument("--dvi-dense", type=str2bool, default=None, metavar="{true,false}",
                   help="dense supervision: KD-only tuples from every committed position of a verify pass and from "
                        "--dvi-prefill-positions prompt positions (CE and PG still train on drafted positions only)")
    g.add_argument("--dvi-prefill-positions", type=int, default=32,
                   help="with --dvi-dense true: prompt positions per prompt the verifier head scores in the prefill "
                        "for KD-only tuples (evenly spread; 0: none)")
    g.add_argument("--max-online-train-ms", type=int, default=5,
                   help="trainer time the decode loop may spend per block (inline trainer: enforced as a token "
                        "bucket, steps that do not fit are skipped; a step is never interrupted)")
    g.add_argument("--dvi-trainer", default="thread", choices=("thread", "inline"),
                   help="thread: the trainer runs on its own thread on a copy of the LoRA tensors and publishes "
                        "them at block boundaries (decoding never waits); inline: steps inside the decode loop")
    g.add_argument("--dvi-trainer-idle", type=str2bool, default=True, metavar="{true,false}",
                   help="thread trainer: step whenever the trainer thread is idle and a new block came (a free "
                        "core trains more); false: one step every --dvi-update-every blocks")
    g.add_argument("--load-lora", default="", help="LoRA checkpoint to resume from or deploy")
    g.add_argument("--save-lora-every", type=int, default=0, help="save every N blocks (0: only at the end)")
    g.add_argument("--save-lora-path", default="runs/checkpoints", help="checkpoint folder; the last state is DIR/final.pt")
    g.add_argument("--metrics-out", default=None,
                   help="folder for acceptance.csv, speed.csv, trainer.csv and the plot (a .csv path means its folder); "
                        "default runs/metrics for DVI runs, none for a plain Kangaroo run")
    g.add_argument("--metrics-every", type=int, default=50, help="print a summary line every N blocks")


def build_parser(kind: str = "kangaroo", description: str | None = None) -> argparse.ArgumentParser:
    if kind not in ("baseline", "kangaroo"):
        raise ValueError(kind)
    p = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_driver_args(p)
    if kind == "kangaroo":
        add_kangaroo_args(p)
        add_dvi_args(p)
    return p


# ----------------------------------------------------------------------------------------------- resolution
def resolve_model_id(args) -> None:
    if args.model_id is None and args.model_path is None:
        fail("--model-id is required: pass a Hugging Face id, a model folder, a .gguf file, or smollm2-135m")
    if args.model_id is None:
        args.model_id = args.model_path
    if args.model_path is not None and args.model_path != args.model_id:
        fail(f"--model-path {args.model_path!r} differs from --model-id {args.model_id!r}: "
             "pass only --model-id (--model-path is the legacy name of the same flag)")


def resolve_adapter_mode(args) -> None:
    """none or adapter-path 'none' -> identity; load or a real path -> load; train -> trained online (from the path,
    if any); auto: train when the --load-lora checkpoint holds a trained adapter, else picks by the path. Also
    resolves --dvi-adapter-window (the checkpoint's, else 16)."""
    from kangaroo.trained_adapter import DEFAULT_WINDOW

    path = args.adapter_path
    no_path = path is None or str(path).strip().lower() in ("", "none")
    saved_window = load_lora_meta(args).get("adapter_window")
    if args.dvi_adapter_window is None:
        args.dvi_adapter_window = saved_window or DEFAULT_WINDOW
    if args.dvi_adapter_window < 1:
        fail("--dvi-adapter-window must be >= 1 (positions the adapter's attention sees)")
    if args.adapter_mode == "none":
        args.adapter_path = None
        return
    if args.adapter_mode == "load" and no_path:
        fail("--adapter-mode load needs --adapter-path DIR (a Kangaroo adapter folder); "
             "or use --adapter-mode none for the identity adapter")
    if args.adapter_mode == "train" and not (args.dvi_online or args.load_lora):
        fail("--adapter-mode train trains the adapter online: pass --dvi-online true, or --load-lora CKPT to deploy "
             "an adapter trained so")
    if args.adapter_mode == "auto":
        args.adapter_mode = "train" if saved_window is not None else "none" if no_path else "load"
    args.adapter_path = None if no_path else path


def resolve_device_dtype(args) -> None:
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = str(args.device).partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        fail(f"--device {args.device}: use cpu, cuda or cuda:N (N the GPU index)")
    if kind == "cuda" and not torch.cuda.is_available():
        fail(f"--device {args.device} but no CUDA device is visible: use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        fail(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s) are visible "
             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "float16"
    if args.num_threads is not None:
        if args.num_threads < 1:
            fail("--num-threads must be >= 1")
        torch.set_num_threads(args.num_threads)
    from kangaroo import cpu_engine

    cpu_engine.set_enabled(getattr(args, "engine", "auto") == "auto")
    if args.device == "cpu" and args.dtype == "float16":
        fail("--dtype float16 is not supported on cpu (slow and imprecise there): use float32 or bfloat16")


def resolve_question_file(args) -> None:
    if getattr(args, "prompts_jsonl", None):
        return
    if args.question_file is None:
        for cand in (REPO / "data" / args.bench_name / "question.jsonl",
                     REPO.parent / "shared" / "data" / args.bench_name / "question.jsonl"):
            if cand.exists():
                args.question_file = str(cand)
                break
        else:
            fail(f"no question file for --bench-name {args.bench_name}: pass --question-file PATH "
                 "(a Spec-Bench/MT-bench question.jsonl)")
    if not Path(args.question_file).is_file():
        fail(f"--question-file {args.question_file} does not exist: pass the path of a question.jsonl")


def validate_static(args) -> None:
    """Checks that need no model config, in this order (the first failure is the one line shown)."""
    _validate_decoding(args)
    _validate_question_range(args)
    _validate_prompts(args)
    if not hasattr(args, "steps"):
        return
    _validate_speculation(args)
    validate_drafter_args(args)
    _validate_dvi_sizes(args)
    _validate_dvi_weights(args)
    if args.load_lora and not Path(args.load_lora).is_file():
        fail(f"--load-lora {args.load_lora} does not exist: pass a checkpoint .pt written by --save-lora-path")


def _validate_decoding(args) -> None:
    if args.temperature != 0.0:
        fail(f"--temperature {args.temperature}: only greedy decoding (--temperature 0.0) is supported, "
             "since losslessness is defined against the greedy output")
    if args.max_new_tokens < 1:
        fail("--max-new-tokens must be >= 1")


def _validate_question_range(args) -> None:
    for name in ("question_begin", "question_end"):
        v = getattr(args, name)
        if v is not None and v < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0")
    if args.question_begin is not None and args.question_end is not None and args.question_end <= args.question_begin:
        fail("--question-end must be greater than --question-begin")
    if (args.categories or args.exclude_categories) and getattr(args, "prompts_jsonl", None):
        fail("--categories/--exclude-categories select questions of --question-file; the --prompts-jsonl stream has "
             "no categories: leave them out or drop --prompts-jsonl")


def _validate_prompts(args) -> None:
    if args.max_prompts is not None and args.max_prompts < 1:
        fail("--max-prompts must be >= 1")
    if args.max_prompts is not None and not args.prompts_jsonl:
        fail("--max-prompts needs --prompts-jsonl PATH")
    if args.prompts_jsonl and not Path(args.prompts_jsonl).is_file():
        fail(f"--prompts-jsonl {args.prompts_jsonl} does not exist: convert the ShareGPT JSON first with "
             "python -m data.sharegpt_stream --convert IN.json OUT.jsonl (or python -m scripts.fetch_assets)")
    if args.prompts_jsonl:
        check_prompts_jsonl(args.prompts_jsonl)


def _validate_speculation(args) -> None:
    if args.steps < 1:
        fail("--steps must be >= 1 (tokens drafted per block at most)")
    if not 0.0 <= args.threshold <= 1.0:
        fail("--threshold must lie in [0, 1] (a probability)")
    if args.exitlayer < 1:
        fail("--exitlayer must be >= 1")


def _validate_dvi_sizes(args) -> None:
    positive = ["dvi_batch_size", "dvi_update_every", "dvi_buffer_size", "dvi_topk", "dvi_lora_r", "metrics_every"]
    for name in positive:
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1")
    if args.dvi_batch_size > args.dvi_buffer_size:
        fail(f"--dvi-batch-size {args.dvi_batch_size} is larger than --dvi-buffer-size {args.dvi_buffer_size}: "
             "lower the batch or raise the buffer")


def _validate_dvi_weights(args) -> None:
    if args.dvi_tau <= 0:
        fail("--dvi-tau must be > 0")
    if (args.dvi_warmup_steps < 0 or args.save_lora_every < 0 or args.max_online_train_ms < 0
            or args.dvi_prefill_positions < 0):
        fail("--dvi-warmup-steps, --save-lora-every, --max-online-train-ms and --dvi-prefill-positions must be >= 0")
    for name, what in (("dvi_lr", "the AdamW learning rate"), ("dvi_lora_alpha", "the LoRA scale; 0 trains nothing")):
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)} must be > 0 ({what})")
    for name in ("dvi_pg_lambda_max", "dvi_entropy_weight"):
        if not getattr(args, name) >= 0:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 0 (a loss weight; 0 turns the term off)")
    if not args.dvi_kl_lambda0 >= args.dvi_kl_lambdamin >= 0:
        fail("need --dvi-kl-lambda0 >= --dvi-kl-lambdamin >= 0 (the KL weight decays from the first to the second)")


def check_prompts_jsonl(path: str) -> None:
    """Fail unless the ShareGPT jsonl holds at least one usable prompt (reads up to the first one)."""
    import contextlib
    import io

    from data.sharegpt_stream import iter_sharegpt_jsonl, skip_summary

    stats: dict = {}
    with contextlib.redirect_stderr(io.StringIO()):  # the skip line belongs to the run, or to the error below
        pairs = iter_sharegpt_jsonl(path, stats=stats)
        found = next(pairs, None) is not None
        pairs.close()
    if not found:
        fail(f"--prompts-jsonl {path} holds no usable prompt ({skip_summary(stats, path) or 'the file is empty'}): "
             "pass a ShareGPT jsonl made by python -m data.sharegpt_stream --convert IN.json OUT.jsonl")


def validate_drafter_args(args) -> None:
    if not hasattr(args, "drafter"):
        return
    if not 1 <= args.ngram_min <= args.ngram_max:
        fail("need 1 <= --ngram-min <= --ngram-max")
    if args.drafter_vocab < -1:
        fail("--drafter-vocab must be >= 0 (0: the full vocabulary) or auto")
    if args.goodput_prior <= 0:
        fail("--goodput-prior must be > 0")


def validate_against_config(args, config) -> None:
    """Checks that need the model config (after loading it)."""
    n_layers = config.num_hidden_layers
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos is not None and args.max_new_tokens >= max_pos:
        fail(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in this model's {max_pos} "
             "positions: lower it")
    if hasattr(args, "exitlayer") and not 1 <= args.exitlayer <= n_layers - 1:
        fail(f"--exitlayer {args.exitlayer} is outside 1..{n_layers - 1} for this {n_layers}-layer model: "
             f"pick a layer in that range (default 2)")
    if getattr(args, "drafter_vocab", 0) > config.vocab_size:
        fail(f"--drafter-vocab {args.drafter_vocab} is larger than the vocabulary ({config.vocab_size}): "
             "lower it, or 0 for the full vocabulary")
    if hasattr(args, "dvi_topk") and args.dvi_topk > config.vocab_size:
        fail(f"--dvi-topk {args.dvi_topk} is larger than the vocabulary ({config.vocab_size}): "
             "lower it or use --dvi-store full")


def parse_args(kind: str = "kangaroo", argv=None, description: str | None = None):
    args = build_parser(kind, description).parse_args(argv)
    resolve_model_id(args)
    if kind == "kangaroo":
        resolve_adapter_mode(args)
        resolve_lora_shape(args)
        resolve_dvi_settings(args)
    validate_static(args)
    resolve_question_file(args)
    resolve_device_dtype(args)
    return args


def load_lora_meta(args) -> dict:
    """The ``--load-lora`` checkpoint's meta ({} without one, or when it cannot be read: a damaged checkpoint is
    reported where it is loaded, in one line)."""
    if not args.load_lora or not Path(args.load_lora).is_file():
        return {}
    from dvi.checkpoint import read_ckpt

    try:
        return read_ckpt(args.load_lora)["meta"]
    except Exception:
        return {}


def resolve_lora_shape(args) -> None:
    """``--dvi-lora-r`` / ``--dvi-lora-alpha`` left out: those of the ``--load-lora`` checkpoint (deploying or resuming a
    drafter needs no flag), else those of ``--dvi-settings``."""
    meta = load_lora_meta(args) if args.dvi_lora_r is None or args.dvi_lora_alpha is None else {}
    if args.dvi_lora_r is None and "lora_r" in meta:
        args.dvi_lora_r = int(meta["lora_r"])
    if args.dvi_lora_alpha is None and "lora_alpha" in meta:
        args.dvi_lora_alpha = float(meta["lora_alpha"])


def resolve_dvi_settings(args) -> None:
    """Every training flag left out (None) takes the value of the named ``--dvi-settings``."""
    for dest, value in dvi_settings(args.dvi_settings).items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


# ----------------------------------------------------------------------------------------------- typed configs
def drafter_config(args):
    """The drafting flags as a frozen ``DrafterConfig`` (``auto`` left for ``build_drafter`` to resolve)."""
    from kangaroo.drafter_config import DrafterConfig

    vocab = args.drafter_vocab
    if vocab == -1:  # auto: a pruned checkpoint brings its own
        saved = load_lora_meta(args).get("drafter_vocab") if getattr(args, "load_lora", "") else None
        vocab = len(saved) if saved is not None else vocab
    return DrafterConfig(model_id=str(args.model_id), drafter=args.drafter, draft_policy=args.draft_policy,
                         threshold=args.threshold, steps=args.steps, ngram_min=args.ngram_min,
                         ngram_max=args.ngram_max, cost_curve=args.cost_curve, goodput_prior=args.goodput_prior,
                         drafter_vocab=vocab, drafter_vocab_file=args.drafter_vocab_file,
                         head_precision=args.drafter_head_precision, probe_gate=args.probe_gate)


def dvi_config(args):
    """The ``--dvi-*`` flags (and the checkpoint/metrics ones) as a frozen ``DVIConfig``, built once."""
    from dvi.config import BufferConfig, DenseConfig, DVIConfig, IOConfig, LoRAConfig, ScheduleConfig, TrainerConfig
    from dvi.settings import config_fields

    named = config_fields(args)  # the training flags (those --dvi-settings fills)
    return DVIConfig(
        online=bool(args.dvi_online),
        buffer=BufferConfig(capacity=args.dvi_buffer_size, store=args.dvi_store, topk=args.dvi_topk,
                            logits_dtype=args.dvi_logits_dtype, seed=args.seed),
        trainer=TrainerConfig(**named["trainer"], entropy_weight=args.dvi_entropy_weight,
                              batch_size=args.dvi_batch_size, kind=args.dvi_trainer, max_ms=args.max_online_train_ms,
                              idle_steps=args.dvi_trainer_idle),
        schedule=ScheduleConfig(**named["schedule"]),
        lora=LoRAConfig(**named["lora"]),
        dense=DenseConfig(**named["dense"], prefill_positions=args.dvi_prefill_positions),
        io=IOConfig(load=args.load_lora, save_every=args.save_lora_every, save_dir=args.save_lora_path,
                    metrics_out=args.metrics_out, metrics_every=args.metrics_every, max_k=args.steps,
                    debug_hk=args.dvi_debug_hk))


def run_main(main_fn, argv=None) -> int:
    """Run a driver's main, turning UserError into one line and exit code 2."""
    try:
        return main_fn(argv) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished answers are kept in the answer file; rerun to continue", file=sys.stderr)
        return 130
