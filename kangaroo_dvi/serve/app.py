"""The HTTP routes (FastAPI on uvicorn): the OpenAI API's chat and text completions, whole or streamed, the served
model, health and Prometheus metrics.

    POST /v1/chat/completions, /v1/completions   body -> checks (schemas.py, 4xx) -> tokens -> scheduler -> events
    GET  /v1/models, /v1/models/{id}, /health (200 once loaded; 503 while draining), /metrics (Prometheus text)

With --api-key every route but /health needs the key (``auth.py``: 401 in OpenAI's shape).

A handler runs on the event loop and talks to the decode thread through a thread-safe hand-off: the request's
``sink`` puts each event on the handler's asyncio queue. Streaming sends each block's new text as a chunk; a client
that disconnects (stream or not) cancels its request, which frees its slot at the next block boundary.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kangaroo_dvi.serve import schemas
from kangaroo_dvi.serve.auth import ApiKeyCheck
from kangaroo_dvi.serve.request_state import Event
from kangaroo_dvi.serve.responses import DONE, Shape, sse
from kangaroo_dvi.serve.schemas import RequestError
from kangaroo_dvi.serve.service import ServeService

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
DISCONNECT_POLL_S = 0.5


def create_app(service: ServeService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        await asyncio.to_thread(service.close)  # the bounded drain, then the final checkpoint

    app = FastAPI(title="Kangaroo-DVI", lifespan=lifespan)
    app.add_middleware(ApiKeyCheck, key=service.cfg.api_key)    # inside the counter: a 401 is counted too
    app.add_middleware(StatusCounter, metrics=service.metrics)
    app.add_exception_handler(RequestError, lambda _req, e: JSONResponse(e.body(), e.status, headers=e.headers))
    created = int(time.time())
    model_card = {"id": service.name, "object": "model", "created": created, "owned_by": "kangaroo-dvi",
                  "max_model_len": service.max_positions}

    @app.get("/health")
    async def health():
        status = service.health()
        return JSONResponse(status, 503 if status["status"] != "ok" else 200)

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != service.name:
            raise RequestError(404, f"model {model_id!r} is not served here: this server serves {service.name!r}",
                               "model", "model_not_found")
        return model_card

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await generate(service, request, schemas.ChatRequest, "messages",
                              lambda req: service.chat_ids(schemas.chat_messages(req)))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(service, request, schemas.CompletionRequest, "prompt",
                              lambda req: service.prompt_ids(schemas.completion_prompt(req)))

    return app


async def generate(service: ServeService, request: Request, kind: type, param: str, render):
    """Body -> checks -> sampling params -> ``render(req)`` token ids -> the scheduler -> the response, streamed or
    whole (every body and chunk with the seed)."""
    req = schemas.parse_body(await request.body(), kind)
    schemas.check_model(req, service.name)
    sampling = schemas.sampling_params(req)
    ids = render(req)
    max_tokens = service.budget(ids, schemas.requested_max_tokens(req), param)
    shape = Shape(kind is schemas.ChatRequest, service.name, req.return_token_ids, sampling.seed)
    events: asyncio.Queue[Event] = asyncio.Queue()
    seq = service.submit(ids, max_tokens, req.stop, thread_safe_sink(events), sampling)
    if req.stream:
        return StreamingResponse(stream(seq, events, shape, req.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await collect(request, seq, events, shape)


def thread_safe_sink(events: asyncio.Queue):
    """The decode thread's way to hand an event to this handler's loop (dropped if the loop is gone)."""
    loop = asyncio.get_running_loop()

    def sink(ev: Event) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, ev)
        except RuntimeError:  # the event loop closed (the server is gone): nobody is listening
            pass

    return sink


async def stream(seq, events: asyncio.Queue, shape: Shape, include_usage: bool):
    finished = False
    try:
        if shape.chat:
            yield sse(shape.chunk("", first=True))
        while True:
            ev = await events.get()
            if ev.kind == "delta":
                yield sse(shape.chunk(ev.text, ids=ev.token_ids))
                continue
            finished = True
            if ev.kind == "error":
                yield sse(RequestError(ev.status, ev.text).body())
            else:
                yield sse(shape.chunk("", finish=ev.finish_reason))
                if include_usage:
                    yield sse(shape.usage_chunk(ev.usage))
            yield DONE
            return
    finally:
        if not finished:  # the client went away (the response task was cancelled): free the slot
            seq.cancel()


async def collect(request: Request, seq, events: asyncio.Queue, shape: Shape):
    text, ids = [], []
    nxt = asyncio.ensure_future(events.get())
    try:
        while True:
            done, _ = await asyncio.wait({nxt}, timeout=DISCONNECT_POLL_S)
            if not done:
                if await request.is_disconnected():
                    return Response(status_code=499)  # nobody reads it; the finally frees the slot
                continue
            ev = nxt.result()
            if ev.kind == "delta":
                text.append(ev.text)
                ids.extend(ev.token_ids)
                nxt = asyncio.ensure_future(events.get())
                continue
            if ev.kind == "error":
                return JSONResponse(RequestError(ev.status, ev.text).body(), ev.status)
            return JSONResponse(shape.body("".join(text), ev.finish_reason, ev.usage, ids))
    finally:
        nxt.cancel()
        seq.cancel()  # a no-op once the request finished; else it stops decoding for nobody


class StatusCounter:
    """ASGI middleware: counts every HTTP response by endpoint and status code (``kdvi_requests_total``)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = next((e for e in ENDPOINTS if path == e or path.startswith(e + "/")), "other")

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
