"""Builders the tests share (fixtures live in ``conftest.py``): a tiny randomly initialised Llama, its config, a few
random prompts, and the bundled real model's folder (only where only it shows the truth). The real model comes
from ``bash scripts/setup.sh``, which the README's test command runs first; without it those tests fail
with that instruction instead of skipping."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
REAL_DIR = REPO / "assets" / "smollm2-135m-instruct"


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


def prompts(n: int = 3) -> list[torch.Tensor]:
    """``n`` random [1, 6] prompts over the tiny model's 97 tokens (the same ones every call)."""
    g = torch.Generator().manual_seed(7)
    return [torch.randint(3, 97, (1, 6), generator=g) for _ in range(n)]


def require_real_model() -> Path:
    if not (REAL_DIR / "config.json").exists():
        pytest.fail(f"bundled model missing at {REAL_DIR}: run `bash scripts/setup.sh` (the README's "
                    "test command does)")
    return REAL_DIR
