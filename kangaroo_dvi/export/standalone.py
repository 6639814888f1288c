"""The drafter as a plain Hugging Face causal LM folder (``--standalone DIR``): a draft model for
``generate(assistant_model=...)``, vLLM (``draft_model``) and SGLang (``STANDALONE``).

    embed_tokens            the base model's
    layers 0..k-1           the base model's first k layers (the drafter's shallow stack)
    layer k (adapter only)  the trained Kangaroo adapter: input_layernorm and q/k/v/o are the adapter's, the MLP is
                            zero (down_proj = 0, so the layer adds nothing after attention) and post_attention_layernorm
                            ones: the layer computes h + attn(input_layernorm(h)) exactly
    norm                    the adapter's output norm (without an adapter: the base model's final norm)
    lm_head                 W + (alpha / r) B A in float32 (untied); rows outside a pruned drafter vocabulary zero
    + the tokenizer, the generation config and kangaroo_dvi.json

The adapter attends over the last W positions (its window; ``kangaroo/trained_adapter.py``). Llama has no per-layer
window, so ``attention="full"`` (the default, a ``LlamaForCausalLM`` every engine loads) lets layer k attend over the
whole context: exact up to position W, an approximation after. ``attention="window"`` writes a
``Qwen2ForCausalLM`` instead (Llama's layers plus zero q/k/v biases), whose config holds per-layer windows
(``layer_types``: full attention for layers 0..k-1, ``sliding_attention`` with ``sliding_window`` = W for layer k):
exact in transformers; serving engines load it only where they support per-layer sliding windows (docs/scale.md).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from common.errors import UserError
from kangaroo_dvi.export.drafter import export_meta, merged_head

ATTENTION = ("full", "window")


def standalone_state(model) -> dict:
    """Llama parameter names -> tensors (float32) of the standalone drafter of ``model``."""
    body, k = model.base_model.model, model.exit_layer
    sd = {"model.embed_tokens.weight": body.embed_tokens.weight}
    for i in range(k):
        sd.update({f"model.layers.{i}.{n}": t for n, t in model.shallow_stack[i].state_dict().items()})
    adapter = model.trained_adapter
    norm = body.norm.weight if adapter is None else adapter.norm.weight
    if adapter is not None:
        d, inter = model.config.hidden_size, model.config.intermediate_size
        sd.update({f"model.layers.{k}.{n}": t for n, t in adapter.state_dict().items() if n != "norm.weight"})
        sd.update({f"model.layers.{k}.post_attention_layernorm.weight": torch.ones(d),
                   f"model.layers.{k}.mlp.gate_proj.weight": torch.zeros(inter, d),
                   f"model.layers.{k}.mlp.up_proj.weight": torch.zeros(inter, d),
                   f"model.layers.{k}.mlp.down_proj.weight": torch.zeros(d, inter)})
    sd.update({"model.norm.weight": norm, "lm_head.weight": merged_head(model)})
    return {n: t.detach().float().cpu().contiguous() for n, t in sd.items()}


def standalone_config(model, attention: str = "full"):
    """The base config cut to the drafter's layers (k, or k + 1 with an adapter), untied, float32; ``window``: as a
    Qwen2 config holding the adapter layer's sliding window."""
    if attention not in ATTENTION:
        raise UserError(f"--standalone-attention {attention!r}: use one of {', '.join(ATTENTION)}")
    cfg = copy.deepcopy(model.config)
    adapter = model.trained_adapter
    layers = model.exit_layer + (adapter is not None)
    cfg.num_hidden_layers, cfg.tie_word_embeddings, cfg.architectures = layers, False, ["LlamaForCausalLM"]
    cfg.dtype = "float32"
    if attention == "full" or adapter is None:
        return cfg
    return _windowed(cfg, model.exit_layer, int(adapter.window))


def _windowed(cfg, k: int, window: int):
    from transformers import Qwen2Config

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim * cfg.num_attention_heads != cfg.hidden_size or getattr(cfg, "attention_bias", False):
        raise UserError("--standalone-attention window writes a Qwen2 config, which needs head_dim * heads == "
                        "hidden_size and no attention bias; this model differs: use --standalone-attention full")
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
            "rope_parameters", "bos_token_id", "eos_token_id", "pad_token_id")
    return Qwen2Config(**{n: getattr(cfg, n) for n in keys}, tie_word_embeddings=False, use_sliding_window=True,
                       sliding_window=window, max_window_layers=k,
                       layer_types=["full_attention"] * k + ["sliding_attention"], architectures=["Qwen2ForCausalLM"],
                       dtype="float32")


def export_standalone(model, out, tokenizer=None, attention: str = "full", ckpt="") -> Path:
    """Write the standalone drafter folder of ``model`` (a ``KangarooModel`` with a deployed drafter head)."""
    from transformers import AutoModelForCausalLM

    cfg = standalone_config(model, attention)
    sd = standalone_state(model)
    if cfg.model_type == "qwen2":  # Qwen2's q/k/v have biases: zero, so the layers equal Llama's
        sd.update({n.replace(".weight", ".bias"): torch.zeros(t.shape[0]) for n, t in list(sd.items())
                   if n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))})
    lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    lm.load_state_dict(sd, strict=True)
    lm.generation_config = copy.deepcopy(model.base_model.generation_config)
    out = Path(out)
    lm.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    meta = {**export_meta(model, ckpt), "attention": "full" if model.trained_adapter is None else attention}
    atomic_write_text(out / "kangaroo_dvi.json", json.dumps(meta, indent=2))
    return out
