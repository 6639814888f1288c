"""Kangaroo-DVI as an OpenAI-compatible HTTP server whose drafter learns from the traffic it serves
(``python -m kangaroo_dvi.serve``). The data path, top to bottom:

    config.py          flags -> resolved args (the drivers' groups) + ServeConfig
    app.py             HTTP routes (FastAPI/uvicorn): chat and text completions, streamed or whole; models, health,
                       metrics
    schemas.py         request bodies, their sampling params, and every refusal (4xx JSON errors in OpenAI's shape)
    auth.py            --api-key: who may call (401 in OpenAI's shape); the key kept out of logs and records
    service.py         request -> tokens (the drivers' chat rendering), context checks, submit; builds the parts
    scheduler.py       the decode thread: bounded admission queue (503 + Retry-After), continuous batching at block
                       granularity (kangaroo.speculative.drafter_step_batch)
    request_state.py   one request's tokens, caches, drafter and stop conditions; the events it sends back
    text_stream.py     tokens -> text deltas, stop strings
    drafting.py        one drafter per request; the cost curve and the goodput calibration shared
    learning.py        one DVILearner for all requests; checkpoints, resume, the run record in --state-dir
    metrics.py         Prometheus metrics
    responses.py       OpenAI response bodies and server-sent-event chunks

Every response is the model's plain sampling with the request's params and seed (OpenAI's defaults when left out: a
seed drawn and returned), or its greedy output at temperature 0, token for token, whatever the drafter and the batch.
"""
