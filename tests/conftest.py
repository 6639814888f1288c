"""Fixtures only (the builders are in ``tests/helpers.py``): a tiny randomly initialised Llama for unit tests, the
bundled real model and its tokenizer where only they show the truth, and a tiny model folder with the real tokenizer
for driver tests. A test that uses the real model's files is marked ``slow`` (``-m "not slow"`` skips them; the
default run keeps them)."""
from __future__ import annotations

import shutil

import pytest
import torch

from tests.helpers import make_tiny_llama, require_real_model

# Tiny-model tests are dominated by per-op overhead, where one thread is fastest (and immune to a busy second
# core); tests on the real model take both cores through the ``real_lm`` fixture.
torch.set_num_threads(1)

REAL_MODEL_FIXTURES = {"_real_lm", "real_lm", "real_tokenizer", "tiny_model_dir"}


def pytest_collection_modifyitems(items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


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
