"""Who may call the server: ``--api-key KEY``, or the environment variable ``KANGAROO_DVI_API_KEY`` (as vLLM's
``--api-key`` / ``VLLM_API_KEY``). The traffic feeds the drafter's training, so the key also decides who may teach it.

    every route but GET /health   needs ``Authorization: Bearer KEY``; without it (or with another key) 401 in OpenAI's
                                  error shape (code ``invalid_api_key``); /metrics too (a Prometheus scrape job sends
                                  the key as its ``authorization`` credentials)
    GET /health                   always open (a load balancer's probe)
    no key                        every route open; listening beyond loopback so, the server warns at start

The key is compared in constant time (``hmac.compare_digest``) and never written out: not in a log line or an error
(the 401 does not echo what was sent), not in the run record (``redact`` masks it in the recorded command line), not in
a checkpoint or /health (``ServeConfig`` keeps it out of its repr).
"""
from __future__ import annotations

import hmac
import ipaddress
import os

from fastapi.responses import JSONResponse

from kangaroo_dvi.serve.schemas import RequestError

ENV = "KANGAROO_DVI_API_KEY"
FLAG = "--api-key"
OPEN_PATHS = ("/health",)
MASK = "<redacted>"


def key_from_env(flag_value: str) -> str:
    """The key: the flag's, else the environment variable's, else none ("")."""
    return flag_value or os.environ.get(ENV, "")


def authorized(header: bytes | None, key: str) -> bool:
    """Whether an ``Authorization`` header value carries ``Bearer KEY`` (the key's UTF-8 bytes, compared in constant
    time)."""
    scheme, _, token = (header or b"").strip().partition(b" ")
    ok = hmac.compare_digest(token.strip(), key.encode("utf-8"))
    return scheme.lower() == b"bearer" and ok


def unauthorized() -> RequestError:
    return RequestError(401, f"a valid API key is required: send the header 'Authorization: Bearer <key>' with the "
                             f"key the server was started with ({FLAG} or {ENV})", code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"})


class ApiKeyCheck:
    """ASGI middleware: with a key, every HTTP request but those to ``OPEN_PATHS`` must carry it."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.key or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or ()).get(b"authorization")
        if authorized(header, self.key):
            return await self.app(scope, receive, send)
        e = unauthorized()
        await JSONResponse(e.body(), e.status, headers=e.headers)(scope, receive, send)


def redact(argv: list[str], key: str) -> list[str]:
    """``argv`` with the key masked: the value of ``--api-key`` (or of a prefix argparse takes for it), given as
    ``--api-key VALUE`` or ``--api-key=VALUE``, and any argument that is the key itself."""
    out, mask_next = [], False
    for a in argv:
        name, eq, _ = a.partition("=")
        flagged = len(name) > 2 and FLAG.startswith(name)
        out.append(MASK if mask_next or (key and a == key) else f"{name}={MASK}" if flagged and eq else a)
        mask_next = flagged and not eq
    return out


def exposure_warning(host: str, key: str) -> str | None:
    """The warning to print when the server listens beyond loopback without a key (None otherwise)."""
    if key or _loopback(host):
        return None
    return (f"[serve] WARNING: listening on {host} without an API key: anyone who can reach this address may call the "
            f"server and teach its drafter; pass {FLAG} KEY (or set {ENV}), or --host 127.0.0.1")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
