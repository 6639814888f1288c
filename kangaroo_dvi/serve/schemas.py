"""The OpenAI request bodies this server reads, and every way one can be refused (a ``RequestError``: a 4xx JSON
error in OpenAI's shape that names the problem and the fix; the server keeps serving).

Sampling: ``temperature``, ``top_p`` and ``seed`` (OpenAI's fields) and ``top_k`` (an extension, vLLM's name) make a
request's ``SamplingParams`` (``sampling_params``); left out, OpenAI's defaults: temperature 1, top_p 1 (and top_k 0,
every token), and a seed the server draws. The answer is this project's plain sampling with those params and that
seed, token for token (``kangaroo/sampling.py``), whoever drafts; temperature 0 is greedy decoding. Refused by name:
``temperature`` < 0, ``top_p`` outside (0, 1], ``top_k`` < 0, a ``seed`` that is not an integer in [-2^63, 2^63),
``n`` other than 1, and a parameter that would change the tokens (penalties, ``logit_bias``) or asks for what is not
served (tools, logprobs, ...). Parameters that cannot change the tokens (``user``, ...) and unknown fields are
ignored.
"""
from __future__ import annotations

import json
import math
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kangaroo.sampling import SamplingParams

MAX_STOP = 4
SEED_BITS = 63   # a request's seed lies in [-2^63, 2^63); a drawn one in [0, 2^63)
OPENAI_TEMPERATURE, OPENAI_TOP_P = 1.0, 1.0   # a request that leaves them out


class RequestError(Exception):
    """``status`` 4xx, ``message`` the problem and the fix, ``param`` the field, ``code`` OpenAI's error code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict:
        kind = "server_busy" if self.status == 503 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> RequestError:
    return RequestError(400, message, param, code)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class Common(BaseModel):
    """Fields both endpoints share."""
    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None          # extension (vLLM's name): keep the k most probable tokens (0: all)
    seed: Any = None                  # checked by ``sampling_params`` (an integer; left out: drawn and returned)
    n: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    return_token_ids: bool = False   # extension: the generated token ids (``token_ids`` in each choice / chunk)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(Common):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


# field -> (is it asking for something not served?, why / what to do)
UNSERVED = {
    "tools": (lambda v: bool(v), "tool calling is not served"),
    "functions": (lambda v: bool(v), "function calling is not served"),
    "tool_choice": (lambda v: v not in (None, "none"), "tool calling is not served"),
    "logprobs": (lambda v: v not in (None, False), "logprobs are not served"),
    "top_logprobs": (lambda v: v is not None, "logprobs are not served"),
    "response_format": (lambda v: bool(v) and v.get("type", "text") != "text", "only plain text responses are served"),
    "frequency_penalty": (lambda v: bool(v), "penalties change the model's tokens, which this server does not"),
    "presence_penalty": (lambda v: bool(v), "penalties change the model's tokens, which this server does not"),
    "logit_bias": (lambda v: bool(v), "logit_bias changes the model's tokens, which this server does not"),
    "echo": (lambda v: bool(v), "echo is not served"),
    "suffix": (lambda v: v is not None, "suffix (insertion) is not served"),
    "best_of": (lambda v: v not in (None, 1), "best_of > 1 is not served: one answer per request"),
}


def parse_body(raw: bytes, kind: type[Common]) -> Common:
    """The request body as ``kind``, or a 400 naming what is wrong with it."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"the request body is not valid JSON ({e}): send a JSON object") from e
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object")
    try:
        req = kind.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or None
        raise bad(f"{field or 'body'}: {err['msg']}", field) from e
    check_served(req)
    return req


def check_served(req: Common) -> None:
    if req.n is not None and req.n != 1:
        raise bad(f"n {req.n}: this server gives one answer per request; pass n 1 or leave it out (for several "
                  "samples, send several requests with different seeds)", "n")
    for field, (used, why) in UNSERVED.items():
        if field in type(req).model_fields and used(getattr(req, field)):
            raise bad(f"{field}: {why}; leave it out", field)


def sampling_params(req: Common) -> SamplingParams:
    """The request's ``SamplingParams``: its ``temperature``, ``top_p``, ``top_k`` and ``seed``, OpenAI's defaults for
    those left out (temperature 1, top_p 1; top_k 0) and a drawn seed (``secrets``, in [0, 2^63)) when it gives none.
    A bad value: a 400 naming the request field (``SamplingParams``' own errors name the command-line flags)."""
    t = OPENAI_TEMPERATURE if req.temperature is None else req.temperature
    if not (math.isfinite(t) and t >= 0):
        raise bad(f"temperature {t} must be a finite number >= 0 (0 decodes greedily; left out: 1)", "temperature")
    top_p = OPENAI_TOP_P if req.top_p is None else req.top_p
    if not 0 < top_p <= 1:
        raise bad(f"top_p {top_p} must lie in (0, 1] (1 keeps every token)", "top_p")
    top_k = 0 if req.top_k is None else req.top_k
    if top_k < 0:
        raise bad(f"top_k {top_k} must be >= 0 (0 keeps every token)", "top_k")
    seed = secrets.randbits(SEED_BITS) if req.seed is None else req.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or not -2 ** SEED_BITS <= seed < 2 ** SEED_BITS:
        raise bad(f"seed {seed!r} must be an integer in [-2^63, 2^63) (left out: the server draws one and returns "
                  "it)", "seed")
    return SamplingParams(temperature=float(t), top_p=float(top_p), top_k=int(top_k), seed=seed)


def check_model(req: Common, served: str) -> None:
    if req.model != served:
        raise RequestError(404, f"model {req.model!r} is not served here: this server serves {served!r} "
                                "(GET /v1/models)", "model", "model_not_found")


def chat_messages(req: ChatRequest) -> list[dict]:
    """``messages`` as the chat template takes them: role and text content (text parts joined)."""
    if not req.messages:
        raise bad("messages is empty: send at least one message", "messages")
    out = []
    for i, m in enumerate(req.messages):
        if m.role not in ("system", "developer", "user", "assistant"):
            raise bad(f"messages[{i}].role {m.role!r}: tool and function messages are not served; use system, "
                      "user or assistant", f"messages[{i}].role")
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text_of(m.content, i)})
    return out


def text_of(content, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad(f"messages[{i}].content: only text parts are served (got type {part.get('type')!r})",
                      f"messages[{i}].content")
        parts.append(part["text"])
    return "".join(parts)


def completion_prompt(req: CompletionRequest) -> str | list[int]:
    """One prompt, as text or token ids (a batch of several prompts is refused: send them as separate requests)."""
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], (str, list)):
        if len(p) != 1:
            raise bad(f"prompt holds {len(p)} prompts: send one prompt per request", "prompt")
        p = p[0]
    return p


def requested_max_tokens(req: Common) -> int | None:
    v = req.max_tokens if req.max_tokens is not None else getattr(req, "max_completion_tokens", None)
    if v is not None and v < 1:
        raise bad(f"max_tokens {v} must be >= 1", "max_tokens")
    return v

