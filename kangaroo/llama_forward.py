"""A Llama decoder-layer stack run over an explicit ``KVCache`` (gpt-fast style).

The weights are the Hugging Face modules' own (``q_proj``, ``mlp``, the norms, the rotary embedding, which
handles every RoPE scaling type); only the attention over the cache is written here, so the cache has one
owner and rollback is ``cache.crop``. Queries sit at positions ``[cache.length, cache.length + n)``; query
``i`` sees keys ``0 .. cache.length + i`` (causal, offset by the cached prefix). A pass over the nodes of a token
tree (``tree``, ``kangaroo/token_tree.py``) gives each row the position of its depth and the keys of its ancestors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kangaroo import cpu_engine
from kangaroo.kv_cache import KVCache
from kangaroo.token_tree import TreeSlots


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


def window_mask(start: int, n: int, window: int, device) -> tuple[int, torch.Tensor | None]:
    """Sliding-window attention for n queries at ``[start, start+n)``: each sees its last ``window`` positions
    (itself included). Returns the first key position any query sees and the boolean mask [n, start+n-that]
    (None for one query: it sees every key from there on)."""
    key_from = max(0, start - window + 1)
    if n == 1:
        return key_from, None
    q_pos = torch.arange(start, start + n, device=device)[:, None]
    k_pos = torch.arange(key_from, start + n, device=device)[None, :]
    return key_from, (k_pos <= q_pos) & (k_pos > q_pos - window)


STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # cos/sin of a position depend on that position only


def rotary_for(rotary_emb, h: torch.Tensor, start: int):
    """cos/sin for positions ``[start, start + n)`` of ``h`` [B, n, d]: rows of a table the model's rotary module
    computed once (each value is its own elementwise product, cos and sin, so a row of the table is what a call
    for that position alone gives, bit for bit); a RoPE type that depends on the sequence length is called."""
    end = start + h.shape[1]
    table = _rotary_table(rotary_emb, h, end)
    if table is None:
        return rotary_emb(h, torch.arange(start, end, device=h.device)[None])
    return table[0][:, start:end], table[1][:, start:end]


def rotary_at(rotary_emb, h: torch.Tensor, positions: list[int]):
    """cos/sin for the given position of each row of ``h`` [B, n, d] (a tree's rows), as ``rotary_for``."""
    table = _rotary_table(rotary_emb, h, max(positions) + 1)
    idx = torch.tensor(positions, device=h.device)
    if table is None:
        return rotary_emb(h, idx[None])
    return table[0].index_select(1, idx), table[1].index_select(1, idx)


def _rotary_table(rotary_emb, h: torch.Tensor, end: int):
    """The model's cos/sin table for positions ``0 .. >= end`` (made once, kept on the module); None for a RoPE
    type that depends on the sequence length."""
    if getattr(rotary_emb, "rope_type", None) not in STATIC_ROPE:
        return None
    table = rotary_emb.__dict__.get("_kangaroo_table")
    if table is None or table[0].shape[1] < end or table[0].dtype != h.dtype or table[0].device != h.device:
        size = max(1024, 2 * end)
        table = rotary_emb(h, torch.arange(size, device=h.device)[None])
        rotary_emb.__dict__["_kangaroo_table"] = table
    return table


def heads(proj, x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``proj(x)`` [B, n, H*D] as heads [B, H, n, D]."""
    B, n, _ = x.shape
    return proj(x).view(B, n, -1, head_dim).transpose(1, 2)


def attend(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """Scaled dot-product attention of q [B, H, n, D] over k/v [B, Hkv, m, D] (grouped heads), then o_proj."""
    B, _, n, _ = q.shape
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return attn.o_proj(out.transpose(1, 2).reshape(B, n, -1))


def attention(attn, x: torch.Tensor, cos, sin, cache: KVCache, layer: int, mask) -> torch.Tensor:
    """Self-attention of one layer; writes this layer's k/v into ``cache`` at ``cache.length``."""
    hd = attn.head_dim
    q = rope(heads(attn.q_proj, x, hd), cos, sin)
    k = rope(heads(attn.k_proj, x, hd), cos, sin)
    k_all, v_all = cache.write(layer, k, heads(attn.v_proj, x, hd))
    return attend(attn, q, k_all, v_all, mask)


def decoder_layer(layer, h: torch.Tensor, cos, sin, cache: KVCache, idx: int, mask) -> torch.Tensor:
    h = h + attention(layer.self_attn, layer.input_layernorm(h), cos, sin, cache, idx, mask)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def pass_rope(rotary_emb, h: torch.Tensor, start: int, tree: TreeSlots | None = None):
    """cos/sin of a pass over ``h`` [B, n, d] at ``start``: consecutive positions, or ``tree``'s depths."""
    if tree is None:
        return rotary_for(rotary_emb, h, start)
    return rotary_at(rotary_emb, h, tree.positions(start, h.shape[1]))


def pass_mask(start: int, n: int, device, tree: TreeSlots | None = None) -> torch.Tensor | None:
    """The attention mask of a pass of n rows at ``start``: causal, or ``tree``'s."""
    return causal_mask(start, n, device) if tree is None else tree.mask(start, n, device)


def run_layers(layers, h: torch.Tensor, cache: KVCache, rotary_emb, tree: TreeSlots | None = None) -> torch.Tensor:
    """Run ``layers`` (cache layers ``0..len(layers)-1``) on ``h`` [B, n, d] appended after the cached prefix
    (``tree``: the rows are nodes of that token tree). A few float32 rows on a CPU go through the lean engine
    (``kangaroo/cpu_engine.py``), the rest as below."""
    start, n = cache.length, h.shape[1]
    stack = cpu_engine.stack_for(layers) if h.shape[0] == 1 and cpu_engine.applies(h) else None
    cos, sin = pass_rope(rotary_emb, h, start, tree)
    if stack is not None:
        cache.check_room(n)
        out = stack.forward(h[0], cache.k, cache.v, start, cos[0], sin[0], None if tree is None else tree.spec())
        cache.advance(n)
        return out[None]
    mask = pass_mask(start, n, h.device, tree)
    for i, layer in enumerate(layers):
        h = decoder_layer(layer, h, cos, sin, cache, i, mask)
    cache.advance(n)
    return h


def run_layers_batch(layers, hs: list[torch.Tensor], caches: list[KVCache], rotary_emb,
                     trees: list[TreeSlots | None] | None = None) -> list[torch.Tensor]:
    """``run_layers`` for several sequences at once: ``hs[i]`` [1, n_i, d] appended after the cached prefix of
    ``caches[i]`` (``trees[i]``: its rows are nodes of that tree; None: causal). On the engine the rows of every
    sequence go through one call (each weight read once for all of them), and each output is bit for bit
    ``run_layers`` of that sequence alone; elsewhere (and for a sequence the engine does not take, e.g. a long
    prefill) a loop of ``run_layers``."""
    trees = trees or [None] * len(hs)
    if not len(hs) == len(caches) == len(trees):
        raise ValueError(f"run_layers_batch: {len(hs)} hidden states for {len(caches)} caches, {len(trees)} trees")
    take = [i for i, h in enumerate(hs) if h.shape[0] == 1 and cpu_engine.applies(h)]
    stack = cpu_engine.stack_for(layers) if len(take) > 1 else None
    out = [None] * len(hs)
    if stack is not None:
        rot = [pass_rope(rotary_emb, hs[i], caches[i].length, trees[i]) for i in take]
        for i in take:
            caches[i].check_room(hs[i].shape[1])
        specs = [torch.empty(0, dtype=torch.int64) if trees[i] is None else trees[i].spec() for i in take]
        res = stack.forward_batch([hs[i][0] for i in take], [caches[i].k for i in take], [caches[i].v for i in take],
                                  [caches[i].length for i in take], [c[0] for c, _ in rot], [s[0] for _, s in rot],
                                  specs)
        for i, h in zip(take, res):
            caches[i].advance(hs[i].shape[1])
            out[i] = h[None]
    for i, h in enumerate(hs):
        if out[i] is None:
            out[i] = run_layers(layers, h, caches[i], rotary_emb, trees[i])
    return out


def new_cache(config, num_layers: int, max_len: int, dtype, device, row_width: int = 0) -> KVCache:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return KVCache(num_layers, config.num_key_value_heads, head_dim, max_len, dtype=dtype, device=device,
                   row_width=row_width)


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


def _engine_rows(logits: torch.Tensor) -> bool:
    return cpu_engine.applies(logits) if logits.dim() > 1 else cpu_engine.applies(logits[None])


def argmax_rows(logits: torch.Tensor) -> list[int]:
    """``logits.argmax(-1)`` as a flat list (the engine's vectorised scan where it takes the rows: same indices)."""
    if _engine_rows(logits):
        return cpu_engine.extension().top1(logits, False)[0]
    return logits.argmax(-1).reshape(-1).tolist()


def top1(logits: torch.Tensor) -> tuple[list[int], list[float]]:
    """Per row: the argmax and its softmax probability (``torch.softmax(logits, -1).max(-1)``; on the engine the
    probability's last bits may differ, its sum being added in another order: it only steers drafting)."""
    if _engine_rows(logits):
        return cpu_engine.extension().top1(logits, True)
    conf, idx = torch.softmax(logits, dim=-1).max(dim=-1)
    return idx.reshape(-1).tolist(), conf.reshape(-1).tolist()
