"""One table of bad setting values, walked through the command line (exit 2 and one line) and through the Python API
(``ConfigError`` with the same text): each setting is checked in one place, its typed config."""
import pytest

from common.config_fields import flag_fields
from common.errors import ConfigError
from dvi.config import (BufferConfig, DenseConfig, DVIConfig, HeldoutConfig, IOConfig, LoRAConfig, ScheduleConfig,
                        TrainerConfig)
from evaluation import cli
from kangaroo.drafter_config import DrafterConfig
from common.command_line import run_main
from kangaroo.sampling import SamplingParams
from kangaroo_dvi import KangarooDVI
from kangaroo_dvi.serve.__main__ import main as serve_main
from kangaroo_dvi.serve.config import ServeConfig
from kangaroo_dvi.session_config import SessionConfig
from tests.helpers import make_tiny_llama, tiny_config

# flag and value -> the same value given to the typed config in Python (argparse gives floats for float flags)
BAD = [
    (["--dvi-lr", "0"], lambda: TrainerConfig(lr=0.0)),
    (["--dvi-lr=-1e-3"], lambda: TrainerConfig(lr=-1e-3)),
    (["--dvi-tau", "0"], lambda: TrainerConfig(tau=0.0)),
    (["--dvi-ablation", "kd"], lambda: TrainerConfig(ablation="kd")),
    (["--dvi-entropy-weight", "-1"], lambda: TrainerConfig(entropy_weight=-1.0)),
    (["--dvi-kd-top1", "-0.5"], lambda: TrainerConfig(kd_top1=-0.5)),
    (["--dvi-pg-form", "sampled"], lambda: TrainerConfig(pg_form="sampled")),
    (["--dvi-feature-lr", "0"], lambda: TrainerConfig(feature_lr=0.0)),
    (["--dvi-batch-size", "0"], lambda: TrainerConfig(batch_size=0)),
    (["--dvi-update-every", "0"], lambda: TrainerConfig(update_every=0)),
    (["--dvi-trainer", "process"], lambda: TrainerConfig(kind="process")),
    (["--max-online-train-ms", "-1"], lambda: TrainerConfig(max_ms=-1)),
    (["--dvi-trainer-share", "0"], lambda: TrainerConfig(share=0.0)),
    (["--dvi-trainer-share", "1.5"], lambda: TrainerConfig(share=1.5)),
    (["--dvi-buffer-size", "0"], lambda: BufferConfig(capacity=0)),
    (["--dvi-store", "dense"], lambda: BufferConfig(store="dense")),
    (["--dvi-topk", "0"], lambda: BufferConfig(topk=0)),
    (["--dvi-logits-dtype", "int8"], lambda: BufferConfig(logits_dtype="int8")),
    (["--dvi-warmup-steps", "-1"], lambda: ScheduleConfig(warmup=-1)),
    (["--dvi-kl-lambda0", "0.05"], lambda: ScheduleConfig(kl0=0.05)),  # below the tuned --dvi-kl-lambdamin 1.0
    (["--dvi-kl-lambdamin", "-1", "--dvi-kl-lambda0", "0"], lambda: ScheduleConfig(kl0=0.0, klmin=-1.0)),
    (["--dvi-pg-lambda-max", "-0.1"], lambda: ScheduleConfig(pgmax=-0.1)),
    (["--dvi-lora-r", "0"], lambda: LoRAConfig(r=0)),
    (["--dvi-lora-alpha", "0"], lambda: LoRAConfig(alpha=0.0)),
    (["--dvi-prefill-positions", "-1"], lambda: DenseConfig(prefill_positions=-1)),
    (["--load-lora", "/no/such.pt"], lambda: IOConfig(load="/no/such.pt")),
    (["--dvi-warm-start", "/no/such.pt"], lambda: IOConfig(warm_start="/no/such.pt")),
    (["--dvi-feature-lr-warm", "0"], lambda: TrainerConfig(feature_lr_warm=0.0)),
    (["--save-lora-every", "-1"], lambda: IOConfig(save_every=-1)),
    (["--metrics-every", "0"], lambda: IOConfig(metrics_every=0)),
    (["--dvi-batch-size", "4096"], lambda: DVIConfig(trainer=TrainerConfig(batch_size=4096))),
    (["--heldout-positions", "-1"], lambda: HeldoutConfig(positions=-1)),
    (["--heldout-file", "/no/such.jsonl"], lambda: HeldoutConfig(file="/no/such.jsonl")),
    (["--heldout-tokens", "0"], lambda: HeldoutConfig(tokens=0)),
    (["--heldout-every", "0"], lambda: HeldoutConfig(every=0)),
    (["--exitlayer", "0"], lambda: DrafterConfig(exit_layer=0)),
    (["--drafter", "medusa"], lambda: DrafterConfig(drafter="medusa")),
    (["--drafter", "self,ngram"], lambda: DrafterConfig(drafter="self,ngram")),  # self must come last
    (["--drafter", "ngram,ngram"], lambda: DrafterConfig(drafter="ngram,ngram")),
    (["--memory-tokens", "0"], lambda: DrafterConfig(memory_tokens=0)),
    (["--feature-window", "0"], lambda: DrafterConfig(feature_window=0)),
    (["--memory-seed", "/no/such.jsonl"], lambda: DrafterConfig(memory_seed="/no/such.jsonl")),
    (["--draft-policy", "eager"], lambda: DrafterConfig(draft_policy="eager")),
    (["--threshold", "1.5"], lambda: DrafterConfig(threshold=1.5)),
    (["--threshold", "-0.1"], lambda: DrafterConfig(threshold=-0.1)),
    (["--steps", "0"], lambda: DrafterConfig(steps=0)),
    (["--ngram-min", "0"], lambda: DrafterConfig(ngram_min=0)),
    (["--ngram-min", "4"], lambda: DrafterConfig(ngram_min=4)),  # above the default --ngram-max 3
    (["--goodput-prior", "0"], lambda: DrafterConfig(goodput_prior=0.0)),
    (["--drafter-vocab", "-2"], lambda: DrafterConfig(drafter_vocab=-2)),  # -1 is auto
    (["--tree-width", "-2"], lambda: DrafterConfig(tree_width=-2)),  # -1 is auto
    (["--tree-width", "9"], lambda: DrafterConfig(tree_width=9)),
    (["--drafter-head-precision", "fp8"], lambda: DrafterConfig(head_precision="fp8")),
    (["--device", "tpu"], lambda: SessionConfig(model_id="tiny", device="tpu")),
    (["--device", "cpu:1"], lambda: SessionConfig(model_id="tiny", device="cpu:1")),
    (["--dtype", "int8"], lambda: SessionConfig(model_id="tiny", dtype="int8")),
    (["--num-threads", "0"], lambda: SessionConfig(model_id="tiny", num_threads=0)),
    (["--engine", "gpu"], lambda: SessionConfig(model_id="tiny", engine="gpu")),
    (["--weights", "q2_k"], lambda: SessionConfig(model_id="tiny", weights="q2_k")),
    (["--adapter-mode", "frozen"], lambda: SessionConfig(model_id="tiny", adapter_mode="frozen")),
    (["--dvi-adapter-window", "0"], lambda: SessionConfig(model_id="tiny", adapter_window=0)),
    (["--temperature=-0.5"], lambda: SamplingParams(temperature=-0.5)),
    (["--temperature", "inf"], lambda: SamplingParams(temperature=float("inf"))),
    (["--temperature", "nan"], lambda: SamplingParams(temperature=float("nan"))),
    (["--top-p", "0"], lambda: SamplingParams(top_p=0.0)),
    (["--top-p", "1.5"], lambda: SamplingParams(top_p=1.5)),
    (["--top-k=-1"], lambda: SamplingParams(top_k=-1)),
]

# the server's own flags (python -m kangaroo_dvi.serve)
BAD_SERVE = [
    (["--port", "70000"], lambda: ServeConfig(port=70000)),
    (["--port=-1"], lambda: ServeConfig(port=-1)),
    (["--max-batch", "0"], lambda: ServeConfig(max_batch=0)),
    (["--queue-size", "0"], lambda: ServeConfig(queue_size=0)),
    (["--max-new-tokens", "0"], lambda: ServeConfig(max_new_tokens=0)),
    (["--drain-timeout", "-1"], lambda: ServeConfig(drain_timeout=-1.0)),
]

# checks against the model's config (a 4-layer model with 97 tokens)
BAD_FOR_MODEL = [
    (["--exitlayer", "4"], dict(exit_layer=4)),
    (["--dvi-topk", "98"], dict(dvi=DVIConfig(buffer=BufferConfig(topk=98)))),
    (["--drafter-vocab", "98"], dict(drafter=DrafterConfig(drafter_vocab=98))),
]


def cli_error(capsys, argv, config=None) -> str:
    """The one line the command line prints for ``argv`` (exit 2), without its ``error: ``."""
    base = ["--model-id", "tiny", "--device", "cpu", "--question-file", __file__, "--max-new-tokens", "64"]
    with pytest.raises(SystemExit) as e:
        args = cli.parse_args("kangaroo", base + argv)
        cli.validate_against_config(args, config)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err.removeprefix("error: ")


@pytest.mark.parametrize("argv,build", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_the_cli_and_the_api_reject_a_bad_value_with_the_same_line(capsys, argv, build):
    with pytest.raises(ConfigError) as e:
        build()
    assert cli_error(capsys, argv) == str(e.value)
    assert argv[0].split("=")[0] in str(e.value)


@pytest.mark.parametrize("argv,build", BAD_SERVE, ids=[" ".join(a) for a, _ in BAD_SERVE])
def test_the_server_and_its_config_reject_a_bad_value_with_the_same_line(capsys, tmp_path, argv, build):
    with pytest.raises(ConfigError) as e:
        build()
    assert run_main(serve_main, ["--model-id", "tiny", "--state-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {e.value}" and argv[0].split("=")[0] in err


@pytest.mark.parametrize("argv,kwargs", BAD_FOR_MODEL, ids=[" ".join(a) for a, _ in BAD_FOR_MODEL])
def test_checks_against_the_model_are_the_same_for_the_cli_and_the_api(capsys, argv, kwargs):
    with pytest.raises(ConfigError) as e:
        KangarooDVI.load("tiny", base_model=make_tiny_llama(), print_fn=lambda *_: None, **kwargs)
    assert cli_error(capsys, argv, tiny_config(vocab_size=97, layers=4)) == str(e.value)


def test_every_checked_flag_is_in_the_table():
    checked = {f.metadata["flag"] for cls in (DVIConfig, DrafterConfig, ServeConfig, SessionConfig, SamplingParams)
               for f in flag_fields(cls) if "rule" in f.metadata or "choices" in f.metadata}
    flags = {argv[0].split("=")[0] for argv, _ in BAD + BAD_SERVE}
    assert checked <= flags, checked - flags


def test_good_values_pass_both_ways():
    args = cli.parse_args("kangaroo", ["--model-id", "tiny", "--device", "cpu", "--question-file", __file__,
                                       "--dvi-lr", "0.02", "--threshold", "1", "--ngram-min", "3"])
    assert cli.dvi_config(args).trainer.lr == 0.02 and cli.drafter_config(args).ngram_min == 3
    assert DVIConfig(trainer=TrainerConfig(lr=0.02, max_ms=None)).trainer.max_ms is None


@pytest.mark.parametrize("build,text", [
    (lambda: TrainerConfig(lr="0.1"), "--dvi-lr '0.1' must be a number"),
    (lambda: TrainerConfig(batch_size=2.5), "--dvi-batch-size 2.5 must be a whole number"),
    (lambda: DVIConfig(online="yes"), "--dvi-online 'yes' must be true or false"),
    (lambda: DVIConfig(buffer=None), "DVIConfig.buffer must be a BufferConfig, got NoneType"),
    (lambda: DrafterConfig(drafter=None), "--drafter None must be a string"),
    (lambda: SamplingParams(seed=1.5), "SamplingParams.seed 1.5 must be a whole number"),
    (lambda: SamplingParams(seed="7"), "SamplingParams.seed '7' must be a whole number"),
    (lambda: SamplingParams(top_k=2.0), "--top-k 2.0 must be a whole number"),
    (lambda: SamplingParams(temperature="hot"), "--temperature 'hot' must be a number"),
])
def test_python_values_of_the_wrong_type_are_named(build, text):
    with pytest.raises(ConfigError) as e:
        build()
    assert str(e.value) == text
