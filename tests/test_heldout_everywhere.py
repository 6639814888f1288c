"""Held-out agreement is one number: the driver, the server (whatever it serves, at any batch) and the library give
the same for the same checkpoint on the same held-out set, read from one cache file."""
import json

from dvi.config import DVIConfig, HeldoutConfig, IOConfig
from dvi.metrics import read_acceptance_csv
from evaluation import inference_kangaroo
from kangaroo_dvi import DrafterConfig, KangarooDVI
from kangaroo_dvi.serve.config import parse_serve_args
from kangaroo_dvi.serve.service import load_service

HELD = ["Name three rivers.", "Why is the sky blue?", "Write a short poem about bread."]
KEYS = ("top1", "accept_len", "n", "trainer_steps")


def questions(path, turns):
    path.write_text("".join(json.dumps({"question_id": i, "category": "x", "turns": [t]}) + "\n"
                            for i, t in enumerate(turns)))
    return path


def test_the_driver_the_server_and_the_library_give_the_same_number(tiny_model_dir, tmp_path):
    """The drafter trains on the held-out prompts here (so that it agrees somewhere: a random model's drafter does
    not); a run's own prompts would be elsewhere."""
    held = questions(tmp_path / "held.jsonl", HELD)
    cfg = HeldoutConfig(file=str(held), positions=24, tokens=8, cache=str(tmp_path / "cache"))
    flags = ["--heldout-file", cfg.file, "--heldout-positions", "24", "--heldout-tokens", "8", "--heldout-cache",
             cfg.cache, "--exitlayer", "2", "--device", "cpu", "--drafter-vocab", "0"]
    driver = ["--model-id", str(tiny_model_dir), "--question-file", str(held), "--max-new-tokens", "12",
              "--no-progress", *flags]
    assert inference_kangaroo.main([*driver, "--answer-file", str(tmp_path / "a.jsonl"), "--dvi-online", "true",
                                    "--dvi-batch-size", "4", "--dvi-update-every", "1", "--dvi-trainer", "inline",
                                    "--max-online-train-ms", "100000", "--dvi-lr", "0.05", "--dvi-warmup-steps", "2",
                                    "--heldout-every", "5", "--save-lora-path", str(tmp_path / "ckpt"),
                                    "--metrics-out", str(tmp_path / "learn")]) == 0
    final = str(tmp_path / "ckpt" / "final.pt")
    learned = read_acceptance_csv(tmp_path / "learn" / "heldout.csv")
    assert learned[-1]["trainer_steps"] > 10 and learned[-1]["top1"] > 0
    assert inference_kangaroo.main([*driver, "--answer-file", str(tmp_path / "d.jsonl"), "--load-lora", final,
                                    "--metrics-out", str(tmp_path / "deploy")]) == 0
    assert {r["drafter"] for r in learned} == {"self", "feature"}  # the online default chain trains both
    learned_end = {r["drafter"]: r for r in learned}
    rows = read_acceptance_csv(tmp_path / "deploy" / "heldout.csv")
    ends = {d: [r for r in rows if r["drafter"] == d] for d in ("self", "feature")}
    for d, mine in ends.items():  # frozen: the end equals the start; the deployed checkpoint is the learned end
        assert {k: mine[0][k] for k in KEYS} == {k: mine[-1][k] for k in KEYS} == {k: learned_end[d][k] for k in KEYS}
    by_driver = {k: ends["self"][0][k] for k in KEYS}  # as the CSV writes them: 6 significant digits

    args, scfg = parse_serve_args(["--model-id", str(tiny_model_dir), "--state-dir", str(tmp_path / "serve"),
                                   "--dvi-online", "false", "--load-lora", final, "--max-batch", "2", *flags])
    service = load_service(args, scfg, [], print_fn=lambda *_: None)
    by_server = service.health()["heldout"]["self"]
    feature_by_server = service.health()["heldout"]["feature"]
    service.close()

    kd = KangarooDVI.load(str(tiny_model_dir), lora=final, print_fn=lambda *_: None,
                          dvi=DVIConfig(online=False, heldout=cfg, io=IOConfig(metrics_out=str(tmp_path / "lib"))),
                          drafter=DrafterConfig(model_id=str(tiny_model_dir), exit_layer=2, drafter_vocab=0))
    by_library = kd.heldout.latest()["self"]
    kd.close()
    assert {k: by_server[k] for k in KEYS} == {k: by_library[k] for k in KEYS}
    assert by_driver == {k: float(f"{by_server[k]:.6g}") for k in KEYS}
    assert {k: ends["feature"][0][k] for k in KEYS} == {k: float(f"{feature_by_server[k]:.6g}") for k in KEYS}
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one capture, read by every later run
