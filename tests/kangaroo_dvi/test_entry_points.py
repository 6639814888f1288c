"""Every command-line entry point loads a drafter checkpoint trained by the defaults (a pruned drafter vocabulary,
with and without a trained adapter) with its default flags, and answers as the baseline driver does: the Kangaroo
driver, the server (deployed, and resumed online from a pruned vocabulary of another size), the export and the
benchmark (the library and the Hugging Face hook: ``test_session.py``). On the tiny model folder (real tokenizer)."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from dvi.deploy import read_deployment
from evaluation import inference_baseline, inference_kangaroo
from kangaroo.model_loading import load_causal_lm
from kangaroo.subvocab import save_counts
from kangaroo_dvi.export import __main__ as export_cli
from scripts.benchmark import cli as benchmark
from tests.evaluation.test_drivers import qfile, run  # noqa: F401 - the fixture
from tests.kangaroo_dvi.helpers import drafter_checkpoint
from tests.serve.server_process import greedy_chat
from tests.serve.test_server import QUESTIONS
from tests.serve.test_service import serve

VOCAB = list(range(2, 400))  # a pruned drafter vocabulary of the real tokenizer (EOS 2 included)


@pytest.fixture(params=[None, 4], ids=["lora-only", "trained-adapter"])
def ckpt(request, tiny_model_dir, tmp_path):
    lm = load_causal_lm(str(tiny_model_dir))
    return str(drafter_checkpoint(lm, tmp_path / "ck" / "final.pt", window=request.param, vocab=VOCAB,
                                  model_id=str(tiny_model_dir)))


def test_driver_deploys_it(tiny_model_dir, qfile, ckpt, tmp_path):  # noqa: F811 - the fixture
    base = run(inference_baseline, tiny_model_dir, qfile, tmp_path / "b.jsonl")
    deployed = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "d.jsonl", "--dvi-online", "false",
                   "--load-lora", ckpt, "--metrics-out", str(tmp_path / "m"))
    assert [d["token_ids"] for d in deployed] == [b["token_ids"] for b in base]


def test_server_deploys_it(tiny_model_dir, ckpt, tmp_path):
    service, outs = serve(tiny_model_dir, tmp_path / "state", "--dvi-online", "false", "--load-lora", ckpt)
    assert outs == [greedy_chat(tiny_model_dir, q, 12)[0] for q in QUESTIONS[:2]]
    assert service.model.drafter_vocab.tolist() == VOCAB and service.learner.resumed_from == ckpt


def test_server_resumes_a_pruned_vocabulary_of_another_size(tiny_model_dir, tmp_path):
    """Trained online on 300 tokens; the same command without the vocabulary flags resumes it (auto: the
    checkpoint's ids), as the driver does."""
    save_counts(tmp_path / "c.npz", np.random.default_rng(0).integers(0, 100, 49152), {"model_id": "tiny"})
    state = tmp_path / "state"
    first, outs = serve(tiny_model_dir, state, "--dvi-online", "true", "--drafter-vocab", "300",
                        "--drafter-vocab-file", str(tmp_path / "c.npz"))
    saved = read_deployment(first.summary["final"])
    assert len(saved.drafter_vocab) == 300
    again, outs_again = serve(tiny_model_dir, state, "--dvi-online", "true")
    assert again.learner.resumed_from == first.summary["final"]
    assert torch.equal(again.model.drafter_vocab.cpu(), saved.drafter_vocab)
    assert outs == outs_again == [greedy_chat(tiny_model_dir, q, 12)[0] for q in QUESTIONS[:2]]


def test_export_writes_it(tiny_model_dir, ckpt, tmp_path):
    assert export_cli.main([ckpt, "--standalone", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "kangaroo_dvi.json").read_text())["drafter_vocab"] == VOCAB
    lm = load_causal_lm(str(tiny_model_dir))
    sa = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    ids = torch.tensor([[1, 9, 33, 250, 17, 4]])
    ref = lm.generate(ids, max_new_tokens=16, do_sample=False)
    assert torch.equal(lm.generate(ids, max_new_tokens=16, do_sample=False, assistant_model=sa), ref)


def test_benchmark_deploys_it(tiny_model_dir, qfile, ckpt, tmp_path):  # noqa: F811 - the fixture
    out = tmp_path / "bench"
    argv = ["--model-id", str(tiny_model_dir), "--question-file", str(qfile), "--max-new-tokens", "8", "--out",
            str(out), "--device", "cpu", "--num-threads", "1", "--no-progress", "--methods", "dvi,dvi_self",
            "--load-lora", ckpt]
    assert benchmark.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lossless"]
    recs = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert all(m["match"] == [True] for r in recs for m in r["methods"].values())
