"""Flag resolution and validation: one error line naming the flag, exit code 2."""
import pytest

from evaluation import cli as cli_utils
from tests.helpers import tiny_config

QFILE = ["--question-file", __file__]  # any existing file passes the path check


def parse(argv, kind="kangaroo"):
    return cli_utils.parse_args(kind, ["--model-id", "smollm2-135m", "--device", "cpu", *QFILE, *argv])


def fails(capsys, argv, match, kind="kangaroo"):
    with pytest.raises(SystemExit) as e:
        parse(argv, kind)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and match in err, err
    return err


def test_defaults_follow_quick_reference():
    a = parse([])
    assert (a.exitlayer, a.threshold, a.steps) == (2, 0.6, 6)
    assert (a.dvi_store, a.dvi_topk, a.dvi_logits_dtype) == ("topk", 1024, "float16")
    assert (a.dvi_buffer_size, a.dvi_batch_size, a.max_online_train_ms, a.dvi_online) == (2048, 64, 5, False)
    assert a.adapter_mode == "none" and a.adapter_path is None and a.dtype == "float32"


def test_workplan_settings_are_one_flag_away():
    a = parse(["--dvi-settings", "workplan"])
    assert (a.dvi_update_every, a.dvi_tau, a.dvi_warmup_steps, a.dvi_pg_lambda_max) == (8, 1.5, 1000, 0.2)
    assert (a.dvi_kl_lambda0, a.dvi_kl_lambdamin, a.dvi_lr) == (1.0, 0.1, 1e-3)
    assert (a.dvi_lora_r, a.dvi_lora_alpha, a.dvi_ablation, a.dvi_kd_top1, a.dvi_pg_form, a.dvi_dense) == (
        8, 8.0, "full", 0.0, "reinforce", False)


def test_training_flags_default_to_the_tuned_settings_and_explicit_flags_win():
    from dvi.settings import SETTINGS

    a = parse([])
    assert a.dvi_settings == "tuned"
    assert {k: getattr(a, k) for k in SETTINGS["tuned"]} == SETTINGS["tuned"]
    assert SETTINGS["tuned"] != SETTINGS["workplan"]
    b = parse(["--dvi-settings", "workplan", "--dvi-lr", "0.02", "--dvi-dense", "true"])
    assert (b.dvi_lr, b.dvi_dense, b.dvi_tau) == (0.02, True, 1.5)


def test_settings_reach_the_typed_config():
    from evaluation.cli import dvi_config

    cfg = dvi_config(parse(["--dvi-kd-top1", "0.5", "--dvi-pg-form", "reinforce"]))
    assert (cfg.trainer.kd_top1, cfg.trainer.pg_form, cfg.lora.r) == (0.5, "reinforce", 64)


@pytest.mark.parametrize("argv,mode,path", [
    ([], "none", None),
    (["--adapter-path", "none"], "none", None),
    (["--adapter-path", "some/dir"], "load", "some/dir"),
    (["--adapter-mode", "none", "--adapter-path", "some/dir"], "none", None),
    (["--adapter-mode", "load", "--adapter-path", "some/dir"], "load", "some/dir"),
])
def test_adapter_mode_resolution(argv, mode, path):
    a = parse(argv)
    assert (a.adapter_mode, a.adapter_path) == (mode, path)


def test_legacy_model_path(capsys):
    assert parse(["--model-path", "smollm2-135m"]).model_id == "smollm2-135m"
    fails(capsys, ["--model-path", "other"], "--model-path")


@pytest.mark.parametrize("argv,match", [
    (["--adapter-mode", "load"], "--adapter-mode load needs --adapter-path"),
    (["--dvi-batch-size", "4096"], "--dvi-batch-size"),
    (["--dvi-store", "dense"], "--dvi-store"),
    (["--dvi-online", "maybe"], "--dvi-online"),
    (["--temperature=-0.7"], "--temperature -0.7 must be a finite number >= 0"),
    (["--top-p", "0"], "--top-p 0.0 must lie in (0, 1]"),
    (["--steps", "0"], "--steps"),
    (["--threshold", "1.5"], "--threshold"),
    (["--dvi-kl-lambda0", "0.05"], "--dvi-kl-lambda0"),
    (["--max-prompts", "3"], "--max-prompts needs --prompts-jsonl"),
    (["--prompts-jsonl", "/no/such.jsonl"], "--prompts-jsonl"),
    (["--load-lora", "/no/such.pt"], "--load-lora"),
    (["--dtype", "float16"], "--dtype float16"),
    (["--dvi-lr", "0"], "--dvi-lr 0.0 must be > 0"),
    (["--dvi-lr=-1e-3"], "--dvi-lr -0.001 must be > 0"),
    (["--dvi-lora-alpha", "0"], "--dvi-lora-alpha 0.0 must be > 0"),
    (["--dvi-pg-lambda-max", "-0.1"], "--dvi-pg-lambda-max -0.1 must be >= 0"),
    (["--dvi-entropy-weight", "-1"], "--dvi-entropy-weight"),
    (["--device", "tpu"], "use cpu, cuda or cuda:N"),
    (["--device", "cuda:1"], "no CUDA device is visible"),
])
def test_bad_flags_give_one_line(capsys, argv, match):
    fails(capsys, argv, match)


def test_missing_question_file(capsys):
    with pytest.raises(SystemExit):
        cli_utils.parse_args("baseline", ["--model-id", "x", "--device", "cpu", "--question-file", "/no/q.jsonl"])
    assert "--question-file" in capsys.readouterr().err


def test_model_id_required(capsys):
    with pytest.raises(SystemExit):
        cli_utils.parse_args("baseline", QFILE)
    assert "--model-id is required" in capsys.readouterr().err


def test_checks_against_config(capsys):
    cfg = tiny_config(vocab_size=97, layers=4)
    cli_utils.validate_against_config(parse(["--exitlayer", "3", "--dvi-topk", "97", "--max-new-tokens", "64"]), cfg)
    for argv, match in [(["--exitlayer", "4"], "outside 1..3"), (["--dvi-topk", "98"], "larger than the vocabulary"),
                        (["--max-new-tokens", "512"], "no room for a prompt in this model's 512 positions")]:
        with pytest.raises(SystemExit):
            tokens = [] if "--max-new-tokens" in argv else ["--max-new-tokens", "64"]
            cli_utils.validate_against_config(parse(argv + tokens), cfg)
        assert match in capsys.readouterr().err


def test_baseline_has_no_dvi_flags(capsys):
    with pytest.raises(SystemExit):
        parse(["--dvi-online", "true"], kind="baseline")


def test_lora_shape_comes_from_the_checkpoint_unless_given(tmp_path):
    from evaluation import cli
    from tests.dvi.test_checkpoint import trained

    _, _, _, path = trained(tmp_path, r=4, alpha=2.0)
    base = ["--model-id", "smollm2-135m", "--question-file", str(tmp_path / "q.jsonl")]
    (tmp_path / "q.jsonl").write_text('{"question_id": 1, "category": "x", "turns": ["hi"]}\n')
    deployed = cli.parse_args("kangaroo", base + ["--load-lora", str(path)])
    assert (deployed.dvi_lora_r, deployed.dvi_lora_alpha) == (4, 2.0)
    given = cli.parse_args("kangaroo", base + ["--load-lora", str(path), "--dvi-lora-r", "16"])
    assert (given.dvi_lora_r, given.dvi_lora_alpha) == (16, 2.0)
    fresh = cli.parse_args("kangaroo", base)
    assert (fresh.dvi_lora_r, fresh.dvi_lora_alpha) == (64, 64.0)  # the tuned settings' (dvi/settings.py)


def test_adapter_mode_train_and_its_window(capsys):
    a = parse(["--adapter-mode", "train", "--dvi-online", "true"])
    assert (a.adapter_mode, a.adapter_path, a.dvi_adapter_window) == ("train", None, 16)
    a = parse(["--adapter-mode", "train", "--dvi-online", "true", "--adapter-path", "d", "--dvi-adapter-window", "8"])
    assert (a.adapter_mode, a.adapter_path, a.dvi_adapter_window) == ("train", "d", 8)
    fails(capsys, ["--adapter-mode", "train"], "--adapter-mode train trains the adapter online: pass --dvi-online true")
    fails(capsys, ["--adapter-mode", "train", "--dvi-online", "true", "--dvi-adapter-window", "0"],
          "--dvi-adapter-window 0 must be >= 1")


def test_a_checkpoint_with_a_trained_adapter_selects_train_mode_and_its_window(tmp_path):
    from tests.dvi.test_adapter_training import train_and_save

    train_and_save(tmp_path, window=5)
    ck = str(tmp_path / "ckpt" / "final.pt")
    deployed = parse(["--load-lora", ck])
    assert (deployed.adapter_mode, deployed.dvi_adapter_window) == ("train", 5)
    given = parse(["--load-lora", ck, "--adapter-mode", "none", "--dvi-adapter-window", "3"])
    assert (given.adapter_mode, given.dvi_adapter_window) == ("none", 3)  # the load then names the fix


@pytest.mark.parametrize("name", ["tuned", "workplan"])
def test_named_settings_round_trip_through_the_typed_config(name):
    from dvi.settings import SETTINGS, flag_values
    from evaluation.cli import dvi_config

    assert flag_values(dvi_config(parse(["--dvi-settings", name]))) == SETTINGS[name]
