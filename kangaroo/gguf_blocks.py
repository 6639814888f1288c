"""A Llama GGUF file's matrices as stored (``StoredWeight``), under the Hugging Face module names transformers
loads them into, so the engine can read the blocks the float32 model was dequantized from.

    token_embd        -> model.embed_tokens (and lm_head when the embedding is tied: no ``output`` tensor)
    output            -> lm_head
    blk.N.attn_q/k/v  -> model.layers.N.self_attn.q_proj/k_proj/v_proj   (q/k rows un-permuted, see below)
    blk.N.attn_output -> ...self_attn.o_proj;  ffn_gate/up/down -> ...mlp.gate_proj/up_proj/down_proj

llama.cpp's converter permutes the rows of attn_q/attn_k for its RoPE layout and transformers un-permutes them on
load; a row of blocks is a row of weights, so the same permutation of whole rows applies here. Tensors in a type
the engine does not read (K-quants, ...) are left out: those modules keep their float32 weights.
"""
from __future__ import annotations

import torch

from kangaroo.weight_formats import StoredWeight

GGUF_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "Q8_0": "q8_0", "Q4_0": "q4_0",
              "Q4_1": "q4_1"}
LAYER_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}


def unpermute_rows(rows: int, n_head: int) -> torch.Tensor:
    """The row order transformers' ``reverse_permute_weights`` gives: HF row i is GGUF row index[i]."""
    dim = rows // n_head // 2
    return torch.arange(rows).reshape(n_head, dim, 2).transpose(1, 2).reshape(rows)


def module_name(gguf_name: str) -> str | None:
    """The Hugging Face module a GGUF matrix loads into (None: not a matrix the engine multiplies by)."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens"
    if gguf_name == "output.weight":
        return "lm_head"
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in LAYER_NAMES and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}"
    return None


def read_blocks(path: str, config) -> tuple[dict[str, StoredWeight], list[str]]:
    """The file's matrices the engine can read, by module name (the tied head under ``lm_head`` too), and the
    names of those it cannot (their type)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    out, skipped = {}, []
    for t in reader.tensors:
        name = module_name(t.name)
        if name is None:
            continue
        fmt = GGUF_TYPES.get(t.tensor_type.name)
        if fmt is None:
            skipped.append(f"{t.name} ({t.tensor_type.name})")
            continue
        cols, rows = (int(x) for x in t.shape)  # GGUF lists the fastest dimension first
        data = torch.from_numpy(t.data.copy()).reshape(rows, -1)
        if fmt in ("float32", "float16", "bfloat16"):
            data = data.view(torch.uint8).view({"float32": torch.float32, "float16": torch.float16,
                                                "bfloat16": torch.bfloat16}[fmt]).reshape(rows, cols)
        stored = StoredWeight(fmt, data.contiguous(), rows, cols)
        if t.name.startswith("blk.") and t.name.split(".")[2] in ("attn_q", "attn_k"):
            heads = config.num_attention_heads
            if t.name.split(".")[2] == "attn_k" and config.num_key_value_heads != heads:
                heads = config.num_key_value_heads
            stored = stored.select_rows(unpermute_rows(rows, heads))
        out[name] = stored
    if "lm_head" not in out and "model.embed_tokens" in out and getattr(config, "tie_word_embeddings", False):
        out["lm_head"] = out["model.embed_tokens"]
    return out, skipped
