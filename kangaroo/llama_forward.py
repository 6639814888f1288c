"""A Llama decoder-layer stack run over an explicit ``KVCache`` (gpt-fast style).

The weights are the Hugging Face modules' own (``q_proj``, ``mlp``, the norms, the rotary embedding, which
handles every RoPE scaling type); only the attention over the cache is written here, so the cache has one
owner and rollback is ``cache.crop``. Queries sit at positions ``[cache.length, cache.length + n)``; query
``i`` sees keys ``0 .. cache.length + i`` (causal, offset by the cached prefix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kangaroo import cpu_engine
from kangaroo.kv_cache import KVCache


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, n, D]; cos/sin [B, n, D]."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def causal_mask(start: int, n: int, device) -> torch.Tensor | None:
    """Boolean [n, start+n] mask (True = attend) for n queries after a cached prefix of ``start``."""
    if n == 1:
        return None  # one query sees every cached key
    q_pos = torch.arange(start, start + n, device=device)[:, None]
    k_pos = torch.arange(start + n, device=device)[None, :]
    return k_pos <= q_pos


def rotary_for(rotary_emb, h: torch.Tensor, start: int):
    """cos/sin for positions ``[start, start + n)`` of ``h`` [B, n, d]."""
    pos = torch.arange(start, start + h.shape[1], device=h.device)[None]
    return rotary_emb(h, pos)


def attention(attn, x: torch.Tensor, cos, sin, cache: KVCache, layer: int, mask) -> torch.Tensor:
    """Self-attention of one layer; writes this layer's k/v into ``cache`` at ``cache.length``."""
    B, n, _ = x.shape
    hd = attn.head_dim
    q = attn.q_proj(x).view(B, n, -1, hd).transpose(1, 2)
    k = attn.k_proj(x).view(B, n, -1, hd).transpose(1, 2)
    v = attn.v_proj(x).view(B, n, -1, hd).transpose(1, 2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k_all, v_all = cache.write(layer, k, v)
    out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=attn.scaling,
                                         enable_gqa=q.shape[1] != k_all.shape[1])
    return attn.o_proj(out.transpose(1, 2).reshape(B, n, -1))


def decoder_layer(layer, h: torch.Tensor, cos, sin, cache: KVCache, idx: int, mask) -> torch.Tensor:
    h = h + attention(layer.self_attn, layer.input_layernorm(h), cos, sin, cache, idx, mask)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def run_layers(layers, h: torch.Tensor, cache: KVCache, rotary_emb) -> torch.Tensor:
    """Run ``layers`` (cache layers ``0..len(layers)-1``) on ``h`` [B, n, d] appended after the cached prefix.
    A few float32 rows on a CPU go through the lean engine (``kangaroo/cpu_engine.py``), the rest as below."""
    start, n = cache.length, h.shape[1]
    cos, sin = rotary_for(rotary_emb, h, start)
    stack = cpu_engine.stack_for(layers) if h.shape[0] == 1 and cpu_engine.applies(h) else None
    if stack is not None:
        cache.check_room(n)
        out = stack.forward(h[0], cache.k, cache.v, start, cos[0], sin[0])[None]
        cache.advance(n)
        return out
    mask = causal_mask(start, n, h.device)
    for i, layer in enumerate(layers):
        h = decoder_layer(layer, h, cos, sin, cache, i, mask)
    cache.advance(n)
    return h


def new_cache(config, num_layers: int, max_len: int, dtype, device) -> KVCache:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return KVCache(num_layers, config.num_key_value_heads, head_dim, max_len, dtype=dtype, device=device)


def final_norm(norm, h: torch.Tensor) -> torch.Tensor:
    """The model's final RMSNorm, row by row (the engine's, where it takes ``h``)."""
    return cpu_engine.rmsnorm(h, norm) if cpu_engine.applies(h) else norm(h)


def project(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``h [..., d] @ weight.T`` for a vocabulary-sized output: the engine's batch-invariant kernel where it
    takes ``h``; else on CPU several rows go as ``(W @ h.T).T`` (MKL's tall-skinny kernel is 2-3x faster there
    than ``F.linear`` for 2..16 rows against 49k outputs)."""
    if cpu_engine.applies(h) and weight.dtype == torch.float32:
        return cpu_engine.linear(h, weight)
    rows = h.numel() // h.shape[-1]
    if h.device.type != "cpu" or rows == 1:
        return F.linear(h, weight)
    return (weight @ h.reshape(rows, -1).T).T.reshape(*h.shape[:-1], weight.shape[0])
