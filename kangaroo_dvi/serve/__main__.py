"""python -m kangaroo_dvi.serve: an OpenAI-compatible server whose drafter learns from the traffic it serves.

    python -m kangaroo_dvi.serve --model-id smollm2-135m --host 127.0.0.1 --port 8000 --dvi-online true \\
        --state-dir runs/serve

Flags: ``--help`` (the drivers' model, Kangaroo, drafter and DVI flags, and the serving ones). The port is taken
before the model loads (a port in use is one error line, exit 2); /health answers 200 once the model is loaded and
the engine built. SIGTERM or Ctrl-C: no new connections, requests in flight finish (up to --drain-timeout), the
final checkpoint is written, exit 0. Listening beyond loopback without ``--api-key`` (or ``KANGAROO_DVI_API_KEY``),
it warns at start.
"""
from __future__ import annotations

import json
import signal
import socket
import sys

from common.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """The listening address, taken now (uvicorn starts listening on it once the model is ready)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}): pass another --port (or --host)") from e
    return sock


def main(argv=None) -> int:
    import uvicorn

    from kangaroo_dvi.serve.app import create_app
    from kangaroo_dvi.serve.auth import exposure_warning
    from kangaroo_dvi.serve.config import parse_serve_args
    from kangaroo_dvi.serve.service import load_service

    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = parse_serve_args(argv)
    sock = bind(cfg.host, cfg.port)
    warning = exposure_warning(cfg.host, cfg.api_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    service = load_service(args, cfg, argv)  # applies --num-threads, --engine, --weights
    host, port = sock.getsockname()[:2]
    print(f"[serve] {cfg.served_model_name} loaded, serving at http://{host}:{port}/v1 (max batch {cfg.max_batch}, "
          f"queue {cfg.queue_size}, state {cfg.state_dir}); drafter {json.dumps(service.factory.metadata())}",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="info", lifespan="on",
                                           timeout_graceful_shutdown=cfg.drain_timeout))
    # uvicorn handles SIGTERM/SIGINT itself (drain, lifespan shutdown) and re-raises the signal afterwards; a no-op
    # handler then lets the process end with 0 once the final checkpoint is written
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    print(f"[serve] stopped{': ' + json.dumps(service.summary) if service.summary else ''}", flush=True)
    return 0


if __name__ == "__main__":
    from common.command_line import run_main

    raise SystemExit(run_main(main))
