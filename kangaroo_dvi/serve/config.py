"""The server's flags: the drivers' model, Kangaroo, drafter and DVI flags (``evaluation/cli.py``'s groups, so they
mean there what they mean here), plus a few of its own, typed in ``ServeConfig``.

    python -m kangaroo_dvi.serve --model-id smollm2-135m --host 127.0.0.1 --port 8000 --dvi-online true \\
        --state-dir runs/serve

``--state-dir DIR`` holds what the server learns: DIR/checkpoints (``--save-lora-path``: step_*.pt every
``--save-lora-every`` blocks, final.pt at shutdown), DIR/metrics (``--metrics-out`` unless given), DIR/run.json.
The same command again resumes from the newest checkpoint there (online); ``--dvi-online false --load-lora CKPT``
serves a frozen drafter.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

SERVE_DEFAULTS = {"save_lora_every": 500}  # periodic checkpoints by default when serving (the drivers: only final)
# the drivers' question/answer flags the shared checks read; a server has none of them
NO_QUESTIONS = {"temperature": 0.0, "question_begin": None, "question_end": None, "categories": None,
                "exclude_categories": None, "prompts_jsonl": None, "max_prompts": None, "overwrite": False}


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    state_dir: str = "runs/serve"
    served_model_name: str = ""      # the name clients pass as ``model`` ("": the --model-id)
    max_batch: int = 8               # requests decoded together (their blocks in one engine call)
    queue_size: int = 16             # requests waiting for a slot beyond those; past it: 503 + Retry-After
    max_new_tokens: int = 256        # a request's max_tokens when it gives none (capped by the context)
    drain_timeout: float = 30.0      # seconds a shutdown waits for requests in flight before it cancels them

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is not a TCP port: pass 1..65535 (0: any free port)")
        for flag, v in (("--max-batch", self.max_batch), ("--queue-size", self.queue_size),
                        ("--max-new-tokens", self.max_new_tokens)):
            if v < 1:
                raise UserError(f"{flag} {v} must be >= 1")
        if self.drain_timeout < 0:
            raise UserError(f"--drain-timeout {self.drain_timeout} must be >= 0 (seconds)")

    @property
    def checkpoints(self) -> Path:
        return Path(self.state_dir) / "checkpoints"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("serving (OpenAI-compatible HTTP)")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on")
    g.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed at start)")
    g.add_argument("--state-dir", default="runs/serve",
                   help="checkpoints (DIR/checkpoints), metrics (DIR/metrics) and the run record (DIR/run.json); "
                        "the same command again resumes from the newest checkpoint there")
    g.add_argument("--served-model-name", default="", help="the model name clients pass (default: --model-id)")
    g.add_argument("--max-batch", type=int, default=8, help="requests decoded together, one block each per engine call")
    g.add_argument("--queue-size", type=int, default=16,
                   help="requests that may wait for a slot; past it a request gets 503 with Retry-After")
    g.add_argument("--max-new-tokens", type=int, default=256, help="max_tokens of a request that gives none")
    g.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM/SIGINT: seconds to let requests in flight finish before cancelling them")
    g.add_argument("--seed", type=int, default=123)


def serve_config(args) -> ServeConfig:
    return ServeConfig(host=args.host, port=args.port, state_dir=args.state_dir,
                       served_model_name=args.served_model_name or str(args.model_id), max_batch=args.max_batch,
                       queue_size=args.queue_size, max_new_tokens=args.max_new_tokens,
                       drain_timeout=args.drain_timeout)


def build_parser() -> argparse.ArgumentParser:
    from evaluation.cli import (
        OneLineParser,
        add_dvi_args,
        add_kangaroo_args,
        add_model_args,
    )

    p = OneLineParser(description="Kangaroo-DVI as an OpenAI-compatible server whose drafter learns from its traffic",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_kangaroo_args(p)
    add_dvi_args(p)
    add_serve_args(p)
    p.set_defaults(**SERVE_DEFAULTS, **NO_QUESTIONS)
    return p


def parse_serve_args(argv=None):
    """Flags -> (resolved args as the drivers resolve them, ServeConfig). An online server resumes from the newest
    checkpoint of its state folder; that checkpoint then decides the adapter mode and LoRA shape, as ``--load-lora``
    does."""
    from evaluation import cli
    from evaluation.inference_kangaroo import prepare_checkpoints

    args = build_parser().parse_args(argv)
    cli.resolve_model_id(args)
    cfg = serve_config(args)
    args.save_lora_path = str(cfg.checkpoints)
    args.metrics_out = args.metrics_out or str(Path(cfg.state_dir) / "metrics")
    prepare_checkpoints(args)
    cli.resolve_adapter_mode(args)
    cli.resolve_lora_shape(args)
    cli.resolve_dvi_settings(args)
    cli.validate_static(args)
    cli.resolve_device_dtype(args)
    return args, cfg
