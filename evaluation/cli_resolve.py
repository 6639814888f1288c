"""Resolving parsed flags before any config is built: the values a flag leaves open, filled in order. Pure: nothing
here changes the process (threads, the engine switch: ``evaluation.runtime.apply_runtime``).

    model id        --model-id, or its legacy name --model-path
    adapter mode    auto -> train (the --load-lora checkpoint holds a trained adapter) / load (a path) / none;
                    --dvi-adapter-window: the checkpoint's, else 16
    LoRA shape      --dvi-lora-r / --dvi-lora-alpha left out: the --load-lora checkpoint's
    drafter vocab   --drafter-vocab auto: a pruned --load-lora checkpoint's size
    named settings  every training flag still left out: the value of --dvi-settings
    question file   data/BENCH/question.jsonl, then ../shared/data/BENCH/question.jsonl
    device, dtype   cuda when visible, else cpu; float32 on cpu, float16 on cuda
"""
from __future__ import annotations

from pathlib import Path

from dvi.settings import settings as dvi_settings
from evaluation.cli_errors import fail

REPO = Path(__file__).resolve().parent.parent


def resolve_model_id(args) -> None:
    if args.model_id is None and args.model_path is None:
        fail("--model-id is required: pass a Hugging Face id, a model folder, a .gguf file, or smollm2-135m")
    if args.model_id is None:
        args.model_id = args.model_path
    if args.model_path is not None and args.model_path != args.model_id:
        fail(f"--model-path {args.model_path!r} differs from --model-id {args.model_id!r}: "
             "pass only --model-id (--model-path is the legacy name of the same flag)")


def load_lora_meta(args) -> dict:
    """The ``--load-lora`` checkpoint's meta ({} without one, or when it cannot be read: a missing file is reported
    when the config is built, a damaged one where it is loaded, in one line)."""
    if not args.load_lora or not Path(args.load_lora).is_file():
        return {}
    from dvi.checkpoint import read_ckpt

    try:
        return read_ckpt(args.load_lora)["meta"]
    except Exception:
        return {}


def resolve_adapter_mode(args) -> None:
    """none or adapter-path 'none' -> identity; load or a real path -> load; train -> trained online (from the path,
    if any); auto: train when the --load-lora checkpoint holds a trained adapter, else picks by the path. Also
    resolves --dvi-adapter-window (the checkpoint's, else 16)."""
    from common.errors import ConfigError
    from kangaroo.trained_adapter import DEFAULT_WINDOW, check_window

    path = args.adapter_path
    no_path = path is None or str(path).strip().lower() in ("", "none")
    saved_window = load_lora_meta(args).get("adapter_window")
    if args.dvi_adapter_window is None:
        args.dvi_adapter_window = saved_window or DEFAULT_WINDOW
    try:
        check_window(args.dvi_adapter_window)
    except ConfigError as e:
        fail(str(e))
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


def resolve_lora_shape(args) -> None:
    """``--dvi-lora-r`` / ``--dvi-lora-alpha`` left out: those of the ``--load-lora`` checkpoint (deploying or resuming
    a drafter needs no flag), else those of ``--dvi-settings``."""
    meta = load_lora_meta(args) if args.dvi_lora_r is None or args.dvi_lora_alpha is None else {}
    if args.dvi_lora_r is None and "lora_r" in meta:
        args.dvi_lora_r = int(meta["lora_r"])
    if args.dvi_lora_alpha is None and "lora_alpha" in meta:
        args.dvi_lora_alpha = float(meta["lora_alpha"])


def resolve_drafter_vocab(args) -> None:
    """``--drafter-vocab auto`` with a ``--load-lora`` checkpoint trained on a pruned vocabulary: its size (the
    checkpoint loads only into the same rows); else auto stays for ``drafter_config.auto_vocab``."""
    from kangaroo.drafter_config import AUTO_VOCAB

    saved = load_lora_meta(args).get("drafter_vocab") if args.drafter_vocab == AUTO_VOCAB else None
    if saved is not None:
        args.drafter_vocab = len(saved)


def resolve_dvi_settings(args) -> None:
    """Every training flag left out (None) takes the value of the named ``--dvi-settings``."""
    for dest, value in dvi_settings(args.dvi_settings).items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


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


def resolve_device_dtype(args) -> None:
    """--device and --dtype filled and checked, --num-threads checked (``apply_runtime`` applies it)."""
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
    if args.num_threads is not None and args.num_threads < 1:
        fail(f"--num-threads {args.num_threads} must be >= 1")
    if args.device == "cpu" and args.dtype == "float16":
        fail("--dtype float16 is not supported on cpu (slow and imprecise there): use float32 or bfloat16")
