"""A session's flags, generated from its typed configs (``SessionConfig``, ``DrafterConfig``, ``DVIConfig``), and the
steps that fill what a flag leaves open, in order. Every command line that builds a session takes these, so a flag
means the same thing in each: the drivers (``evaluation/cli.py``) and the server (``kangaroo_dvi/serve/config.py``).

    model id        --model-id, or its legacy name --model-path
    adapter mode    auto -> train (the --load-lora checkpoint holds a trained adapter) / load (a path) / none;
                    --dvi-adapter-window: the checkpoint's, else 16 (``session_config.choose_adapter``)
    LoRA shape      --dvi-lora-r / --dvi-lora-alpha left out: the --load-lora checkpoint's
    drafter vocab   --drafter-vocab auto: a pruned --load-lora checkpoint's size
    named settings  every training flag still left out: the value of --dvi-settings
    device, dtype   cuda when visible, else cpu; float32 on cpu, float16 on cuda (``kangaroo.runtime.choose_device``)

The checkpoint is read by ``dvi.deploy.read_deployment``, as when the session is built. A wrong flag is one line and
exit code 2. Parsing has no side effects: ``build_session`` applies the runtime (threads, engine, weights).
"""
from __future__ import annotations

import argparse

from common.command_line import fail
from common.config_fields import add_flags, check_value, dest_of, flag_fields, from_args
from common.errors import ConfigError
from dvi.config import DVIConfig
from dvi.deploy import peek_deployment
from dvi.settings import DEFAULT as DEFAULT_SETTINGS, SETTINGS, settings as dvi_settings
from kangaroo.drafter_config import AUTO_VOCAB, DrafterConfig
from kangaroo.sampling import SamplingParams
from kangaroo_dvi.session_config import SessionConfig, choose_adapter

RUNTIME_FLAGS = ("--device", "--dtype", "--num-threads", "--engine", "--weights")
MODEL_FLAGS = ("--model-id", *RUNTIME_FLAGS)
ADAPTER_FLAGS = ("--adapter-path", "--adapter-mode")


# ----------------------------------------------------------------------------------------------- flags
def add_model_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("model")
    add_flags(g, SessionConfig, only=MODEL_FLAGS)
    g.add_argument("--model-path", default=None, help="legacy name of --model-id; if given it must equal it")
    return g


def add_seed_arg(g) -> None:
    add_flags(g, SessionConfig, only={"--seed"})


def add_sampling_args(g) -> None:
    """--temperature, --top-p, --top-k (``SamplingParams``) and --seed: greedy unless --temperature > 0."""
    add_flags(g, SamplingParams)
    add_seed_arg(g)


def add_kangaroo_args(p: argparse.ArgumentParser):
    """The Kangaroo adapter and every drafting flag (``DrafterConfig``)."""
    g = p.add_argument_group("kangaroo (self-speculative decoding)")
    add_flags(g, SessionConfig, only=ADAPTER_FLAGS)
    add_flags(g, DrafterConfig)
    return g


def add_dvi_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("DVI (online drafter training)")
    g.add_argument("--dvi-settings", default=DEFAULT_SETTINGS, choices=tuple(SETTINGS),
                   help="named values of the training flags left out: tuned (measured on the bundled SmolLM2-135M) "
                        "or workplan (the work plan's 7B values); see dvi/settings.py")
    add_flags(g, DVIConfig)
    add_flags(g, SessionConfig, only={"--dvi-adapter-window"})
    return g


# ----------------------------------------------------------------------------------------------- open values
def resolve_model_id(args) -> None:
    if not args.model_id and args.model_path is None:
        fail("--model-id is required: pass a Hugging Face id, a model folder, a .gguf file, or smollm2-135m")
    if not args.model_id:
        args.model_id = args.model_path
    if args.model_path is not None and args.model_path != args.model_id:
        fail(f"--model-path {args.model_path!r} differs from --model-id {args.model_id!r}: "
             "pass only --model-id (--model-path is the legacy name of the same flag)")


def resolve_adapter_mode(args) -> None:
    """``choose_adapter`` on the flags, with the --load-lora checkpoint's adapter window."""
    saved = peek_deployment(args.load_lora)
    try:
        args.adapter_mode, args.adapter_path, args.dvi_adapter_window = choose_adapter(
            args.adapter_mode, args.adapter_path, args.dvi_adapter_window, saved and saved.adapter_window,
            trains=bool(args.dvi_online or args.load_lora))
    except ConfigError as e:
        fail(str(e))


def resolve_lora_shape(args) -> None:
    """``--dvi-lora-r`` / ``--dvi-lora-alpha`` left out: those of the ``--load-lora`` checkpoint (deploying or resuming
    a drafter needs no flag), else those of ``--dvi-settings``."""
    saved = peek_deployment(args.load_lora) if args.dvi_lora_r is None or args.dvi_lora_alpha is None else None
    if saved is not None:
        args.dvi_lora_r = saved.lora.r if args.dvi_lora_r is None else args.dvi_lora_r
        args.dvi_lora_alpha = saved.lora.alpha if args.dvi_lora_alpha is None else args.dvi_lora_alpha


def resolve_drafter_vocab(args) -> None:
    """``--drafter-vocab auto`` with a ``--load-lora`` checkpoint trained on a pruned vocabulary: its size (the
    session then takes its ids); else auto stays for ``drafter_config.auto_vocab``."""
    saved = peek_deployment(args.load_lora) if args.drafter_vocab == AUTO_VOCAB else None
    if saved is not None and saved.drafter_vocab is not None:
        args.drafter_vocab = len(saved.drafter_vocab)


def resolve_dvi_settings(args) -> None:
    """Every training flag left out (None) takes the value of the named ``--dvi-settings``."""
    for dest, value in dvi_settings(args.dvi_settings).items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


def resolve_session_flags(args) -> None:
    """The values the --load-lora checkpoint and the named settings decide, in order (drivers and server alike)."""
    resolve_adapter_mode(args)
    resolve_lora_shape(args)
    resolve_drafter_vocab(args)
    resolve_dvi_settings(args)


def resolve_device_dtype(args) -> None:
    """The runtime flags checked (``SessionConfig``'s rules), then --device and --dtype filled and checked against this
    machine (``build_session``, or a script's ``apply_runtime``, applies --num-threads)."""
    from kangaroo.runtime import choose_device

    try:
        for f in flag_fields(SessionConfig, only=RUNTIME_FLAGS):  # a script's --load-lora may mean something else
            if hasattr(args, dest_of(f.metadata["flag"])):
                check_value(f, getattr(args, dest_of(f.metadata["flag"])))
        args.device, args.dtype = choose_device(args.device, args.dtype)
    except ConfigError as e:
        fail(str(e))


# ----------------------------------------------------------------------------------------------- configs
def session_config(args) -> SessionConfig:
    """The model, runtime and adapter flags (and --seed, --load-lora, --overwrite) as a frozen ``SessionConfig``; a
    bad value raises ``ConfigError`` naming its flag."""
    return from_args(SessionConfig, args)


def drafter_config(args) -> DrafterConfig:
    """The drafting flags as a frozen ``DrafterConfig`` (``auto`` left for the session to resolve)."""
    return from_args(DrafterConfig, args)


def sampling_params(args) -> SamplingParams:
    """--temperature, --top-p, --top-k and --seed as a frozen ``SamplingParams`` (greedy at temperature 0)."""
    return from_args(SamplingParams, args)


def dvi_config(args) -> DVIConfig:
    """The ``--dvi-*`` flags (and the checkpoint/metrics ones) as a frozen ``DVIConfig``."""
    return from_args(DVIConfig, args)
