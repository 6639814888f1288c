"""The server's flags: a session's model, Kangaroo, drafter and DVI flags, resolved by the same steps as the drivers'
(``kangaroo_dvi/session_flags.py``, so they mean there what they mean here), plus a few of its own, typed in
``ServeConfig``.

    python -m kangaroo_dvi.serve --model-id smollm2-135m --host 127.0.0.1 --port 8000 --dvi-online true \\
        --state-dir runs/serve

``--state-dir DIR`` holds what the server learns: DIR/checkpoints (``--save-lora-path``: step_*.pt every
``--save-lora-every`` blocks, final.pt at shutdown), DIR/metrics (``--metrics-out`` unless given), DIR/run.json.
The same command again resumes from the newest checkpoint there (online); ``--dvi-online false --load-lora CKPT``
serves a frozen drafter. ``--api-key KEY`` (or ``KANGAROO_DVI_API_KEY``): who may call it (``auth.py``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from common.command_line import OneLineParser
from common.config_fields import Rule, add_flags, at_least, check_fields, from_args, setting
from kangaroo_dvi import session_flags
from kangaroo_dvi.serve.auth import key_from_env

# periodic checkpoints by default when serving (the drivers: only final); the trainer thread's share of wall time
# while requests decode, so that it leaves the serving threads their cores (the drivers: no bound; dvi/trainer_share.py)
SERVE_DEFAULTS = {"save_lora_every": 500, "dvi_trainer_share": 0.4}


PORT = Rule("is not a TCP port: pass 1..65535 (0: any free port)", lambda p: 0 <= p <= 65535)


@dataclass(frozen=True)
class ServeConfig:
    host: str = setting("127.0.0.1", flag="--host", help="address to listen on")
    port: int = setting(8000, flag="--port", rule=PORT, help="TCP port (0: any free port, printed at start)")
    state_dir: str = setting("runs/serve", flag="--state-dir",
                             help="checkpoints (DIR/checkpoints), metrics (DIR/metrics) and the run record "
                                  "(DIR/run.json); the same command again resumes from the newest checkpoint there")
    served_model_name: str = setting("", flag="--served-model-name",
                                     help="the model name clients pass (default: --model-id)")
    max_batch: int = setting(8, flag="--max-batch", rule=at_least(1),
                             help="requests decoded together, one block each per engine call")
    queue_size: int = setting(16, flag="--queue-size", rule=at_least(1),
                              help="requests that may wait for a slot; past it a request gets 503 with Retry-After")
    max_new_tokens: int = setting(256, flag="--max-new-tokens", rule=at_least(1),
                                  help="max_tokens of a request that gives none (capped by the context)")
    drain_timeout: float = setting(30.0, flag="--drain-timeout", rule=at_least(0, "seconds"),
                                   help="on SIGTERM/SIGINT: seconds to let requests in flight finish before "
                                        "cancelling them")
    api_key: str = setting("", flag="--api-key", secret=True,
                           help="every route but /health (/metrics included) needs 'Authorization: Bearer KEY'; "
                                "default: the environment variable KANGAROO_DVI_API_KEY, else none (open). Prefer "
                                "the variable: a flag is visible to other users of the machine (ps)")

    def __post_init__(self):
        check_fields(self)

    @property
    def checkpoints(self) -> Path:
        return Path(self.state_dir) / "checkpoints"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("serving (OpenAI-compatible HTTP)")
    add_flags(g, ServeConfig)
    session_flags.add_seed_arg(g)


def serve_config(args) -> ServeConfig:
    """The serving flags as a frozen ``ServeConfig`` (the served name defaults to --model-id, the API key to the
    environment's, ``auth.key_from_env``); a bad value raises ``ConfigError`` naming its flag."""
    cfg = from_args(ServeConfig, args)
    return replace(cfg, served_model_name=cfg.served_model_name or str(args.model_id),
                   api_key=key_from_env(cfg.api_key))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Kangaroo-DVI as an OpenAI-compatible server whose drafter learns from its traffic",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    session_flags.add_model_args(p)
    session_flags.add_kangaroo_args(p)
    session_flags.add_dvi_args(p)
    add_serve_args(p)
    p.set_defaults(**SERVE_DEFAULTS)
    return p


def parse_serve_args(argv=None):
    """Flags -> (resolved args as the drivers resolve them, ServeConfig); every config the flags make is built once
    here (a bad value: ``ConfigError``, one line). An online server resumes from the newest checkpoint of its state
    folder; that checkpoint then decides the adapter mode, LoRA shape and drafter vocabulary, as ``--load-lora``
    does."""
    from dvi.deploy import resume_checkpoint

    args = build_parser().parse_args(argv)
    session_flags.resolve_model_id(args)
    cfg = serve_config(args)
    args.save_lora_path = str(cfg.checkpoints)
    args.metrics_out = args.metrics_out or str(Path(cfg.state_dir) / "metrics")
    if args.dvi_online and not args.load_lora:
        args.load_lora = resume_checkpoint(args.save_lora_path)
    session_flags.resolve_session_flags(args)
    session_flags.session_config(args)
    session_flags.drafter_config(args)
    session_flags.dvi_config(args)
    session_flags.resolve_device_dtype(args)
    return args, cfg
