"""Request checks without a server: each refusal is a 4xx naming the field and the fix; what the server can serve
passes; the sampling params of a request (OpenAI's defaults when left out: temperature 1, top_p 1, a drawn seed)."""
import json

import pytest

from kangaroo_dvi.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    RequestError,
    chat_messages,
    check_model,
    completion_prompt,
    parse_body,
    requested_max_tokens,
    sampling_params,
)

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return parse_body(json.dumps({"model": "m", "messages": MSG, **fields}).encode(), ChatRequest)


def refused(fn, *args, **kw) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args, **kw)
    return e.value


def test_requests_pass_and_keep_their_fields():
    req = chat(max_tokens=5, temperature=0, n=1, top_p=0.3, seed=4, stop="\n\n", stream=True,
               stream_options={"include_usage": True}, tool_choice="none", logprobs=False, user="u")
    assert (req.max_tokens, req.stop, req.stream, req.include_usage) == (5, ["\n\n"], True, True)
    assert chat().temperature is None and requested_max_tokens(chat()) is None
    assert requested_max_tokens(chat(max_completion_tokens=9)) == 9


def test_sampling_params_of_a_request():
    p = sampling_params(chat(temperature=0.7, top_p=0.9, top_k=40, seed=-3))
    assert (p.temperature, p.top_p, p.top_k, p.seed) == (0.7, 0.9, 40, -3)
    assert sampling_params(chat(temperature=0, seed=5)).greedy
    drawn = [sampling_params(chat()) for _ in range(3)]   # OpenAI's defaults; a seed drawn for each request
    assert all((p.temperature, p.top_p, p.top_k) == (1.0, 1.0, 0) for p in drawn)
    assert all(isinstance(p.seed, int) and 0 <= p.seed < 2 ** 63 for p in drawn) and len({p.seed for p in drawn}) == 3


@pytest.mark.parametrize("fields,words", [
    ({"temperature": -0.1}, "temperature -0.1 must be a finite number >= 0"),
    ({"temperature": float("inf")}, "temperature inf must be a finite number"),
    ({"top_p": 0}, "top_p 0.0 must lie in (0, 1]"),
    ({"top_p": 1.01}, "top_p 1.01 must lie in (0, 1]"),
    ({"top_k": -2}, "top_k -2 must be >= 0"),
    ({"seed": 2.5}, "seed 2.5 must be an integer"),
    ({"seed": True}, "seed True must be an integer"),
    ({"seed": -2 ** 63 - 1}, "in [-2^63, 2^63)"),
])
def test_bad_sampling_values_name_the_request_field(fields, words):
    e = refused(sampling_params, chat(**fields))
    (param,) = fields
    assert e.status == 400 and e.param == param and words in e.message and "--" not in e.message


@pytest.mark.parametrize("fields,param,words", [
    ({"n": 2}, "n", "one answer"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool calling"),
    ({"tool_choice": "auto"}, "tool_choice", "tool calling"),
    ({"logprobs": True}, "logprobs", "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs", "logprobs"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "change the model's tokens"),
    ({"logit_bias": {"5": 3}}, "logit_bias", "changes the model's tokens"),
    ({"top_k": 2.5}, "top_k", "integer"),
    ({"response_format": {"type": "json_object"}}, "response_format", "plain text"),
    ({"max_tokens": "many"}, "max_tokens", "integer"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
])
def test_unserved_or_malformed_fields_are_refused_by_name(fields, param, words):
    e = refused(chat, **fields)
    assert e.status == 400 and e.param == param and words in e.message
    assert e.body()["error"]["param"] == param and e.body()["error"]["type"] == "invalid_request_error"


def test_bad_bodies_and_the_wrong_model():
    assert "not valid JSON" in refused(parse_body, b"{'model': 1", ChatRequest).message
    assert "JSON object" in refused(parse_body, b"[1, 2]", ChatRequest).message
    assert refused(parse_body, b'{"messages": []}', ChatRequest).param == "model"
    e = refused(check_model, chat(), "served")
    assert e.status == 404 and e.code == "model_not_found" and "'served'" in e.message
    assert refused(requested_max_tokens, chat(max_tokens=0)).param == "max_tokens"


def test_messages_become_role_and_text_and_tool_messages_are_refused():
    req = chat(messages=[{"role": "developer", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert chat_messages(req) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert "tool" in refused(chat_messages, chat(messages=[{"role": "tool", "content": "x"}])).message
    img = [{"type": "image_url", "image_url": {"url": "x"}}]
    assert "text parts" in refused(chat_messages, chat(messages=[{"role": "user", "content": img}])).message
    assert "empty" in refused(chat_messages, chat(messages=[])).message


def test_completion_prompts():
    def comp(prompt, **kw):
        return parse_body(json.dumps({"model": "m", "prompt": prompt, **kw}).encode(), CompletionRequest)

    assert completion_prompt(comp("text")) == "text"
    assert completion_prompt(comp(["one"])) == "one"
    assert completion_prompt(comp([5, 6, 7])) == [5, 6, 7]
    assert completion_prompt(comp([[5, 6]])) == [5, 6]
    assert refused(completion_prompt, comp(["a", "b"])).param == "prompt"
    for field, value in (("echo", True), ("suffix", "x"), ("best_of", 3), ("logprobs", 2)):
        assert refused(comp, "p", **{field: value}).param == field
