"""The server's parts built from its flags, without HTTP: an online server learns and leaves final.pt;
``--dvi-online false --load-lora CKPT`` serves that drafter frozen, answers still greedy; a taken port and bad
serving flags are one line (UserError)."""
import socket

import pytest
import torch

from common.errors import UserError
from dvi.checkpoint import read_ckpt
from kangaroo.chat import chat_prompt_ids
from kangaroo_dvi.serve.__main__ import bind
from kangaroo_dvi.serve.config import parse_serve_args
from kangaroo_dvi.serve.service import load_service
from tests.serve.server_process import TINY_FLAGS, greedy_chat
from tests.serve.test_scheduler import request, result
from tests.serve.test_server import QUESTIONS


def serve(model_dir, state, *flags):
    args, cfg = parse_serve_args(["--model-id", str(model_dir), "--state-dir", str(state), *TINY_FLAGS, *flags])
    service = load_service(args, cfg, [], print_fn=lambda *_: None)
    service.start()
    outs = []
    for q in QUESTIONS[:2]:
        ids = chat_prompt_ids(service.tokenizer, [{"role": "user", "content": q}], str(model_dir))
        seq, events = request(ids, 12)
        seq.eos = service.eos
        service.scheduler.submit(seq)
        outs.append(result(events)[0])
    service.close()
    return service, outs


def test_online_then_deployed_frozen(tiny_model_dir, tmp_path):
    online, outs = serve(tiny_model_dir, tmp_path / "learn", "--dvi-online", "true")
    refs = [greedy_chat(tiny_model_dir, q, 12)[0] for q in QUESTIONS[:2]]
    assert outs == refs
    final = online.summary["final"]
    assert read_ckpt(final)["extra"]["finished"] is True

    deployed, outs = serve(tiny_model_dir, tmp_path / "deploy", "--dvi-online", "false", "--load-lora", final)
    assert outs == refs
    status = deployed.learner.status()
    assert status["online"] is False and status["trainer_steps"] == 0 and deployed.factory.cfg.draft_policy == "goodput"
    assert torch.equal(deployed.model.drafter_head.proj.B, read_ckpt(final)["lora"]["B"])
    assert deployed.model.drafter_head.proj.B.abs().sum() > 0
    assert not (tmp_path / "deploy" / "checkpoints" / "final.pt").exists()  # a frozen drafter saves nothing


def test_a_taken_port_and_bad_serving_flags_are_one_line(tiny_model_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}.*another --port"):
            bind("127.0.0.1", port)
    for flags, words in ((["--max-batch", "0"], "--max-batch 0 must be >= 1"),
                         (["--port", "70000"], "not a TCP port")):
        with pytest.raises(UserError, match=words):
            parse_serve_args(["--model-id", str(tiny_model_dir), "--state-dir", str(tmp_path), *flags])
