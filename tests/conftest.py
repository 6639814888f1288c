"""Shared fixtures: a tiny randomly initialised Llama (unit tests) and the bundled real model (only where
only it shows the truth). The real model comes from ``python -m scripts.fetch_assets``, which the README's test
command runs first; without it those tests fail with that instruction instead of skipping."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
REAL_DIR = REPO / "assets" / "smollm2-135m-instruct"

# Tiny-model tests are dominated by per-op overhead, where one thread is fastest (and immune to a busy second
# core); tests on the real model take both cores through the ``real_lm`` fixture.
torch.set_num_threads(1)


def tiny_config(vocab_size: int = 97, layers: int = 4, **kw):
    from transformers import LlamaConfig

    cfg = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
               tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg.update(kw)
    return LlamaConfig(**cfg)


def make_tiny_llama(seed: int = 0, dtype=torch.float64, **kw):
    """A random Llama in float64, so block-vs-token numerics cannot flip an argmax."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(**kw)
    cfg.initializer_range = 0.2  # peaked logits: argmax is well defined
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


def require_real_model() -> Path:
    if not (REAL_DIR / "config.json").exists():
        pytest.fail(f"bundled model missing at {REAL_DIR}: run `python -m scripts.fetch_assets` (the README's "
                    "test command does)")
    return REAL_DIR


@pytest.fixture(scope="session")
def _real_lm():
    require_real_model()
    from kangaroo.model_loading import load_causal_lm

    return load_causal_lm("smollm2-135m", device="cpu", dtype="float32")


@pytest.fixture
def real_lm(_real_lm):
    torch.set_num_threads(2)
    yield _real_lm
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_tokenizer():
    require_real_model()
    from kangaroo.model_loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama saved as a model folder with the bundled tokenizer (vocab 49152), for driver tests."""
    real = require_real_model()
    out = tmp_path_factory.mktemp("tiny_model")
    model = make_tiny_llama(vocab_size=49152, dtype=torch.float32, layers=4)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (real / name).exists():
            shutil.copy(real / name, out / name)
    return out
