"""A real server (tiny model, 127.0.0.1, an API key) and real clients (the official ``openai`` package, httpx):
answers streamed and whole equal greedy decoding at temperature 0, and plain sampling with the same params and seed
otherwise (the client's defaults: sampled, the seed drawn and returned); concurrent clients with different params;
every bad request gets a 4xx naming the problem and the server keeps serving; without the key 401 (/health open, the
key in no record or log); a client that disconnects mid-stream frees its slot; past the queue bound, 503 with
Retry-After."""
import json
import threading
import time

import httpx
import pytest

from kangaroo.sampling import SamplingParams
from tests.serve.server_process import Server, client, greedy_chat, greedy_text

QUESTIONS = [f"Tell me fact number {i} about the number {i * 7}." for i in range(6)]
LONG = 440  # tokens: a request that is still decoding when the test acts (the tiny model's context is 512)
WAIT_S = 30
KEY = "sk-test-4f1c9e2a7b"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    s = Server(tiny_model_dir, tmp_path_factory.mktemp("serve") / "state", "--dvi-online", "true", api_key=KEY)
    yield s
    assert s.stop() == 0, s.output()


def ask(server, text, max_tokens, stream=False, temperature=0, extra=None, **kw):
    """(content, token ids, finish_reason, usage, seed) of a chat request through the openai client; greedy unless
    ``temperature`` (None: left out, the client's default); ``extra``: more body fields (``top_k``)."""
    c = client(server)
    kw = {"extra_body": {"return_token_ids": True, **(extra or {})}, "model": server.health()["model"],
          "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **kw}
    if temperature is not None:
        kw["temperature"] = temperature
    if not stream:
        r = c.chat.completions.create(**kw)
        ch = r.choices[0]
        return ch.message.content, ch.model_extra["token_ids"], ch.finish_reason, r.usage, r.model_extra["seed"]
    parts, ids, finish, usage, seeds = [], [], None, None, set()
    for chunk in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        seeds.add(chunk.model_extra["seed"])  # every chunk carries it
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            parts.append(ch.delta.content or "")
            ids += (ch.model_extra or {}).get("token_ids") or []
            finish = ch.finish_reason or finish
    assert len(seeds) == 1, seeds
    return "".join(parts), ids, finish, usage, seeds.pop()


@pytest.mark.parametrize("stream", [False, True])
def test_chat_answers_equal_greedy_decoding(server, tiny_model_dir, stream):
    for text in QUESTIONS[:2]:
        ref_ids, ref_text = greedy_chat(tiny_model_dir, text, 24)
        content, ids, finish, usage, _ = ask(server, text, 24, stream=stream)
        assert ids == ref_ids and content == ref_text
        assert finish == ("stop" if len(ref_ids) < 24 else "length")
        assert usage.completion_tokens == len(ref_ids) and usage.total_tokens > usage.completion_tokens


def test_text_completions_equal_greedy_decoding(server, tiny_model_dir):
    c, name = client(server), server.health()["model"]
    ref_ids, ref_text = greedy_text(tiny_model_dir, "Once upon a time", 20)
    r = c.completions.create(model=name, prompt="Once upon a time", max_tokens=20, temperature=0)
    assert r.choices[0].text == ref_text and r.usage.completion_tokens == len(ref_ids)
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(model=name, prompt="Once upon a time",
                                                                         max_tokens=20, stream=True, temperature=0)
                       if ch.choices)
    assert streamed == ref_text
    p = SamplingParams(temperature=0.9, top_p=0.9, seed=3)
    ref_ids, ref_text = greedy_text(tiny_model_dir, "Once upon a time", 20, p)
    r = c.completions.create(model=name, prompt="Once upon a time", max_tokens=20, temperature=0.9, top_p=0.9, seed=3)
    assert r.choices[0].text == ref_text and r.model_extra["seed"] == 3


def test_concurrent_clients_each_get_their_greedy_answer(server, tiny_model_dir):
    """Four clients at once (two decoded together, two waiting: the queue bound), streaming and not."""
    out = {}

    def run(i):
        out[i] = ask(server, QUESTIONS[i], 32, stream=i % 2 == 0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 4)
    for i in range(4):
        ref_ids, ref_text = greedy_chat(tiny_model_dir, QUESTIONS[i], 32)
        assert out[i][1] == ref_ids and out[i][0] == ref_text


def post(server, body, path="/v1/chat/completions", key=KEY):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}{path}", content=raw, headers={"Content-Type": "application/json", **auth},
                      timeout=WAIT_S)


def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(server, tiny_model_dir):
    name = server.health()["model"]
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        (b'{"model": "x", "messages": [', 400, None, "not valid JSON"),
        ({"model": "gpt-4o", "messages": msgs}, 404, "model", "not served here"),
        ({"model": name, "messages": msgs, "max_tokens": 0}, 400, "max_tokens", ">= 1"),
        ({"model": name, "messages": msgs, "max_tokens": 100000}, 400, "max_tokens", "pass max_tokens <="),
        ({"model": name, "messages": [{"role": "user", "content": "word " * 600}]}, 400, "messages", "context"),
        ({"model": name, "messages": msgs, "temperature": -0.5}, 400, "temperature", "temperature -0.5 must be"),
        ({"model": name, "messages": msgs, "top_p": 0}, 400, "top_p", "top_p 0.0 must lie in (0, 1]"),
        ({"model": name, "messages": msgs, "top_p": 1.5}, 400, "top_p", "top_p 1.5 must lie in (0, 1]"),
        ({"model": name, "messages": msgs, "top_k": -1}, 400, "top_k", "top_k -1 must be >= 0"),
        ({"model": name, "messages": msgs, "seed": 1.5}, 400, "seed", "seed 1.5 must be an integer"),
        ({"model": name, "messages": msgs, "seed": "7"}, 400, "seed", "seed '7' must be an integer"),
        ({"model": name, "prompt": "hi", "seed": 2 ** 63}, 400, "seed", "[-2^63, 2^63)"),
        ({"model": name, "messages": msgs, "n": 3}, 400, "n", "one answer"),
        ({"model": name, "messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
         "tools", "tool calling"),
        ({"model": name, "messages": msgs, "logprobs": True}, 400, "logprobs", "logprobs"),
        ({"model": name, "prompt": "hi", "logprobs": 3}, 400, "logprobs", "logprobs"),
    ]
    for body, status, param, words in cases:
        path = "/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions"
        r = post(server, body, path)
        err = r.json()["error"]
        assert (r.status_code, err["param"]) == (status, param) and words in err["message"], (body, r.text)
    import openai

    with pytest.raises(openai.BadRequestError, match="temperature -1.0 must be a finite number >= 0"):
        client(server).chat.completions.create(model=name, messages=msgs, temperature=-1.0)
    assert ask(server, QUESTIONS[0], 8)[1] == greedy_chat(tiny_model_dir, QUESTIONS[0], 8)[0]  # still serving


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server, tiny_model_dir):
    cancelled, tokens = server.metric("kdvi_requests_cancelled_total"), server.metric("kdvi_generated_tokens_total")
    body = {"model": server.health()["model"], "messages": [{"role": "user", "content": "Count."}],
            "max_tokens": LONG, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers,
                      timeout=WAIT_S) as r:
        next(r.iter_lines())  # the stream started; now hang up
    deadline = time.monotonic() + WAIT_S
    while server.metric("kdvi_requests_cancelled_total") == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("kdvi_requests_cancelled_total") == cancelled + 1
    assert server.metric("kdvi_requests_in_flight") == 0
    assert server.metric("kdvi_generated_tokens_total") - tokens < LONG  # it stopped decoding for nobody
    assert ask(server, QUESTIONS[1], 8)[1] == greedy_chat(tiny_model_dir, QUESTIONS[1], 8)[0]


def test_past_the_queue_bound_503_with_retry_after_and_no_request_lost(server, tiny_model_dir):
    """2 in flight + 2 waiting is the bound: of 8 long requests sent at once, those past it get 503 + Retry-After at
    once; every other one gets its full greedy answer."""
    name, text, n = server.health()["model"], "Tell me a long story.", 120
    results = []

    def run():
        results.append(post(server, {"model": name, "messages": [{"role": "user", "content": text}],
                                     "max_tokens": n, "return_token_ids": True, "temperature": 0}))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 4)
    codes = sorted(r.status_code for r in results)
    assert len(results) == 8 and set(codes) == {200, 503} and codes.count(200) >= 4, codes
    ref = greedy_chat(tiny_model_dir, text, n)[0]
    for r in results:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1 and "capacity" in r.json()["error"]["message"]
        else:
            assert r.json()["choices"][0]["token_ids"] == ref


def test_health_models_and_metrics(server):
    h = server.health()
    assert h["status"] == "ok" and h["online"] is True and h["global_step"] > 0
    models = client(server).models.list()
    assert [m.id for m in models.data] == [h["model"]]
    assert server.metric("kdvi_trainer_steps") > 0 and server.metric("kdvi_tokens_per_second") >= 0
    # the trainer thread's share of wall time is bounded by the server's default --dvi-trainer-share
    assert 0 <= h["trainer_share"] and server.metric("kdvi_trainer_owed_steps") >= 0
    text = server.metrics_text()
    for name in ("kdvi_mean_accepted_length{source=", "kdvi_top1_agree", "kdvi_lora_version", "kdvi_queue_depth",
                 'kdvi_requests_total{endpoint="/v1/chat/completions",status="400"}', "kdvi_time_to_first_token"):
        assert name in text, name


def test_the_client_defaults_sample_with_a_returned_seed_that_reproduces_the_answer(server, tiny_model_dir):
    """No temperature (OpenAI's defaults: temperature 1, top_p 1): a sampled answer, not an error, with the seed the
    server drew; sending that seed back gives the same tokens, and both equal plain sampling with it."""
    _, ids, _, _, seed = ask(server, QUESTIONS[0], 16, temperature=None)
    assert isinstance(seed, int)
    assert ask(server, QUESTIONS[0], 16, temperature=None, seed=seed)[1] == ids
    assert ids == greedy_chat(tiny_model_dir, QUESTIONS[0], 16, SamplingParams(temperature=1.0, seed=seed))[0]


@pytest.mark.parametrize("stream", [False, True])
def test_with_a_seed_answers_equal_plain_sampling(server, tiny_model_dir, stream):
    p = SamplingParams(temperature=0.8, top_p=0.9, top_k=40, seed=7)
    ref_ids, ref_text = greedy_chat(tiny_model_dir, QUESTIONS[1], 24, p)
    content, ids, _, usage, seed = ask(server, QUESTIONS[1], 24, stream=stream, temperature=0.8, top_p=0.9, seed=7,
                                       extra={"top_k": 40})
    assert (ids, content, seed, usage.completion_tokens) == (ref_ids, ref_text, 7, len(ref_ids))
    assert ids != greedy_chat(tiny_model_dir, QUESTIONS[1], 24)[0]  # sampled indeed


def test_concurrent_requests_with_different_params_each_equal_their_plain_sampling(server, tiny_model_dir):
    """Four at once, decoded in one batch (two at a time, two waiting), each under its own params (one greedy)."""
    params = [SamplingParams(temperature=0.7, top_p=0.95, seed=1), SamplingParams(temperature=1.3, top_k=20, seed=2),
              SamplingParams(), SamplingParams(temperature=0.5, top_p=0.5, top_k=5, seed=2 ** 62)]
    out = {}

    def run(i, p):
        out[i] = ask(server, QUESTIONS[i], 24, stream=i % 2 == 1, temperature=p.temperature, top_p=p.top_p,
                     seed=p.seed, extra={"top_k": p.top_k})

    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(params)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 4)
    for i, p in enumerate(params):
        assert out[i][1] == greedy_chat(tiny_model_dir, QUESTIONS[i], 24, p)[0], p


def test_without_the_key_401_health_open_and_the_key_in_no_record_or_log(server, tiny_model_dir):
    import openai

    name, msgs = server.health()["model"], [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="sk-wrong").chat.completions.create(model=name, messages=msgs, max_tokens=4)
    for key in ("", "sk-wrong", KEY + "x"):
        r = post(server, {"model": name, "messages": msgs}, key=key)
        err = r.json()["error"]
        assert r.status_code == 401 and err["code"] == "invalid_api_key" and "Authorization: Bearer" in err["message"]
    assert httpx.get(f"{server.url}/v1/models", timeout=WAIT_S).status_code == 401
    assert httpx.get(f"{server.url}/metrics", timeout=WAIT_S).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=WAIT_S).status_code == 200  # open, as a probe needs it
    assert 'status="401"' in server.metrics_text() and KEY not in json.dumps(server.health())
    record = (server.state_dir / "run.json").read_text()
    assert "--api-key" in record and "<redacted>" in record
    written = [f for f in server.state_dir.rglob("*") if f.is_file()]  # run.json, metrics, checkpoints
    assert any(f.suffix == ".pt" for f in written)
    for f in [*written, server.log_path]:
        assert KEY.encode() not in f.read_bytes(), f
