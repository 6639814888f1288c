"""kangaroo_dvi.session.build_session, the one session builder, on a tiny float64 Llama: a checkpoint decides what it
was trained with (a trained adapter and its window, a pruned drafter vocabulary, the LoRA shape), an online session
resumes the newest checkpoint of its folder, and the library and the Hugging Face hook, which build through it, answer
a checkpoint trained by the defaults exactly as greedy decoding does."""
import pytest
import torch

from dvi.checkpoint import CheckpointError, read_ckpt
from dvi.config import BufferConfig, DVIConfig, IOConfig, TrainerConfig
from dvi.deploy import read_deployment
from kangaroo.greedy import greedy_decode
from kangaroo.trained_adapter import adapter_tensors
from kangaroo_dvi import DrafterConfig, KangarooDVI, hf
from kangaroo_dvi.session import NO_DRAFTER, PER_REQUEST, build_session
from kangaroo_dvi.session_config import SessionConfig
from tests.helpers import make_tiny_llama, prompts
from tests.kangaroo_dvi.helpers import drafter_checkpoint

VOCAB = list(range(2, 60))  # a pruned drafter vocabulary (EOS 2 included), as --drafter-vocab auto gives
QUIET = {"print_fn": lambda *_: None}
TINY = SessionConfig(model_id="tiny", seed=None)


def online_cfg(tmp_path, **io):
    """The default DVIConfig, made small enough to train a few steps on the tiny model."""
    return DVIConfig(online=True, buffer=BufferConfig(capacity=64, topk=16),
                     trainer=TrainerConfig(batch_size=4, update_every=1, kind="inline", max_ms=None),
                     io=IOConfig(save_dir=str(tmp_path / "ck"), metrics_out=str(tmp_path / "m"), max_k=6, **io))


@pytest.fixture(scope="module")
def lm():
    return make_tiny_llama()


@pytest.mark.parametrize("window", [None, 4])
def test_a_deployed_checkpoint_decides_adapter_vocabulary_and_lora_shape(lm, tmp_path, window):
    ckpt = drafter_checkpoint(lm, tmp_path / "final.pt", window=window, vocab=VOCAB)
    session = build_session(SessionConfig(model_id="tiny", seed=None, drafter_checkpoint=str(ckpt)),
                            DrafterConfig(), base_model=lm, drafting=NO_DRAFTER, **QUIET)
    model, saved = session.model, read_deployment(ckpt)
    assert session.config.adapter_mode == ("none" if window is None else "train")
    assert (model.trained_adapter is None) == (window is None) and session.checkpoint.path == str(ckpt)
    if window is not None:
        assert model.trained_adapter.window == window == session.config.adapter_window
        saved_adapter = read_ckpt(ckpt)["adapter"]
        assert all(torch.equal(v, saved_adapter[k]) for k, v in adapter_tensors(model.trained_adapter).items())
    assert torch.equal(model.drafter_head.proj.B, read_ckpt(ckpt)["lora"]["B"])
    assert model.drafter_vocab.tolist() == VOCAB and saved.lora.r == 4 and saved.lora.alpha == 8.0
    assert model.drafter_head.proj.r == 4  # the checkpoint's shape, not DVIConfig's default (64)
    assert session.learner is None and session.drafter is None and session.drafter_factory is None
    assert session.eos == set() and not session.online and session.resumed_from is None


@pytest.mark.parametrize("window", [None, 4])
def test_library_and_hf_hook_answer_a_default_checkpoint_as_greedy(lm, tmp_path, window):
    """The README's examples: default settings (auto drafter, policy and vocabulary) and a checkpoint trained on a
    pruned vocabulary, with and without a trained adapter."""
    ckpt = str(drafter_checkpoint(lm, tmp_path / "final.pt", window=window, vocab=VOCAB))
    kd = KangarooDVI.load("tiny", base_model=lm, lora=ckpt, **QUIET)
    assert kd.model.drafter_vocab.tolist() == VOCAB
    for ids in prompts(3):
        ref = lm.generate(ids, max_new_tokens=24, do_sample=False)
        assert kd.generate(ids, 24).tokens == ref[0, ids.shape[1]:].tolist()
        assert torch.equal(lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, lora=ckpt), ref)
    built = next(iter(lm.__dict__[hf.CACHE_ATTR].values()))
    assert built.model.drafter_vocab.tolist() == VOCAB and torch.equal(built.model.drafter_head.proj.B,
                                                                       kd.model.drafter_head.proj.B)
    assert hf.close(lm) == []


def test_an_online_session_resumes_the_newest_checkpoint_of_its_folder(lm, tmp_path):
    kd = KangarooDVI.from_session(build_session(TINY, DrafterConfig(), online_cfg(tmp_path), base_model=lm, **QUIET))
    assert kd.learner.online and kd.model.drafter_head.proj.r == 64  # DVIConfig's default shape
    for ids in prompts(3):
        assert kd.generate(ids, 24).tokens == greedy_decode(lm, ids, 24, set()).tokens
    summary = kd.close()
    assert summary["train_steps"] > 0
    lines = []
    again = build_session(TINY, DrafterConfig(), online_cfg(tmp_path), base_model=lm, drafting=PER_REQUEST,
                          print_fn=lines.append)
    assert again.resumed_from == summary["final"] and any("resuming from" in line for line in lines)
    assert again.learner.global_step == kd.learner.global_step > 0 and again.drafter_factory is not None
    assert torch.equal(again.model.drafter_head.proj.B, kd.model.drafter_head.proj.B)
    again.learner.finish(False)
    fresh = build_session(SessionConfig(model_id="tiny", seed=None, restart=True), DrafterConfig(),
                          online_cfg(tmp_path), base_model=lm, drafting=NO_DRAFTER, **QUIET)
    assert fresh.checkpoint is None and fresh.learner.global_step == 0
    fresh.learner.finish()


def test_a_checkpoint_that_does_not_fit_is_one_line(lm, tmp_path):
    ckpt = drafter_checkpoint(lm, tmp_path / "final.pt", window=4, vocab=VOCAB)
    for cfg, drafter, words in (
            (SessionConfig(model_id="tiny", seed=None, drafter_checkpoint=str(ckpt), adapter_mode="none"),
             DrafterConfig(), "holds a trained adapter (window 4) but this run drafts without it"),
            (SessionConfig(model_id="tiny", seed=None, drafter_checkpoint=str(ckpt)), DrafterConfig(drafter_vocab=0),
             "trained on a pruned drafter vocabulary of 58 tokens"),
            (SessionConfig(model_id="tiny", seed=None, drafter_checkpoint=str(tmp_path / "missing.pt")),
             DrafterConfig(), "does not exist")):
        with pytest.raises(CheckpointError) as e:
            build_session(cfg, drafter, base_model=lm, drafting=NO_DRAFTER, **QUIET)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_what_a_session_leaves_open_is_filled_and_checked(lm):
    session = build_session(TINY, DrafterConfig(), base_model=lm, **QUIET)
    assert (session.config.device, session.config.dtype, session.config.adapter_mode) == ("cpu", "float32", "none")
    assert session.drafter_config.model_id == "tiny" and session.drafter is not None and session.learner is None
    with pytest.raises(ValueError, match="drafting 'two'"):
        build_session(TINY, DrafterConfig(), base_model=lm, drafting="two", **QUIET)
