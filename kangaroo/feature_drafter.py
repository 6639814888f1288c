"""The feature drafter's network (EAGLE-1, arXiv 2401.15077): one small decoder layer over the verifier's own
last-layer features, and a LoRA copy of the LM head. DVI trains it online (``--drafter feature``).

    entry k (k = 0, 1, ...):  x_k = fc([f_k ; e(t_{k+1})])          f_k the verifier's feature at position k,
                                                                     t_{k+1} the token at position k + 1
                              g_k = norm(layer(x_k | entries k-W+1 .. k))   predicts f_{k+1}
                              drafter head(g_k) -> the token at position k + 2

f is the verifier's **post-norm** last-layer state (``KangarooModel.forward_deep``'s output, what its head reads):
the verify pass returns it anyway, it is the space the head (and so the drafter's output g) lives in, and it is
RMS-normalised, where SmolLM2's pre-norm residual stream carries a few huge outlier dimensions. The layer is a Llama
decoder layer (RMSNorm, grouped-query attention with RoPE at the entry's index, SiLU MLP; the model's sizes) whose
attention sees the last ``window`` entries (itself included), at draft time as in training, where each tuple carries
those W input rows; an RMSNorm of its own puts g on the features' scale, so the chain's next entry reads it as it
reads f. Drafting chains over the layer's own outputs: the entry after a drafted token d is (g, d).

Start (``init``): ``identity`` (the default): fc = [I | 0], the layer's two output projections zero and the norm's
weight 1, so g_k = f_k / rms(f_k) and the drafter at step 0 proposes the verifier's own token at k + 1 again (useless,
but the gradient starts at the projections that matter, as the trained adapter's does); ``layer0``: fc = [0 | I] and
a copy of the model's first layer and final norm (an exit-layer-1 early exit at step 0); ``random``: every matrix
drawn N(0, initializer_range). Measured offline (``runs/exp_feature_drafter``), identity learns fastest. The head
starts as the verifier's head (LoRA B = 0) over the pruned drafter vocabulary either way.

``FeatureDrafterModel`` carries what ``kangaroo.packed_head.propose`` reads of a model (its ``drafter_head``, the
head's precision), so the feature drafter's head goes through the same packed kernel as the self-drafter's,
with weights of its own. The per-sequence state (its KV cache, how far it caught up) is the drafter's
(``kangaroo/drafters/feature.py``); the features themselves are kept per sequence by ``kangaroo/feature_log.py``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from kangaroo.drafter_head import DrafterHead
from kangaroo.kv_cache import KVCache
from kangaroo.llama_forward import attend, heads, rope, rotary_for, window_mask

DEFAULT_WINDOW = 8
INITS = ("identity", "layer0", "random")


class FeatureNet(nn.Module):
    """fc over [f ; e], one Llama decoder layer and an RMSNorm (weights of their own, the model's sizes)."""

    def __init__(self, config, window: int):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        d = config.hidden_size
        self.window = window
        self.fc = nn.Linear(2 * d, d, bias=False)
        self.layer = LlamaDecoderLayer(config, layer_idx=0)
        self.norm = LlamaRMSNorm(d, eps=config.rms_norm_eps)

    @torch.no_grad()
    def initialise(self, init: str, std: float, base_model=None) -> None:
        if init not in INITS:
            raise ValueError(f"feature drafter init {init!r}: use one of {', '.join(INITS)}")
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
        d = self.fc.weight.shape[0]
        if init == "identity":
            self.fc.weight.zero_()
            self.fc.weight[:, :d].copy_(torch.eye(d))
            self.layer.self_attn.o_proj.weight.zero_()
            self.layer.mlp.down_proj.weight.zero_()
        if init == "layer0":
            body = base_model.model
            self.fc.weight.zero_()
            self.fc.weight[:, d:].copy_(torch.eye(d))
            self.layer.load_state_dict(body.layers[0].state_dict())
            self.norm.load_state_dict(body.norm.state_dict())

    def inputs(self, f: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The entries' residual stream x = fc([f ; e]), [..., d]."""
        return self.fc(torch.cat([f, e.to(f.dtype)], dim=-1))

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.layer.mlp(self.layer.post_attention_layernorm(h)))

    def forward_rows(self, x: torch.Tensor, cos, sin, n: int, mask) -> torch.Tensor:
        """Entries x [B, L, d] with their RoPE cos/sin [B, L, D] (no cache): the outputs g [B, n, d] of the last n,
        their queries attending x's rows under ``mask`` (bool, True = attend; None: all)."""
        attn = self.layer.self_attn
        xn = self.layer.input_layernorm(x)
        q = rope(heads(attn.q_proj, xn[:, -n:], attn.head_dim), cos[:, -n:], sin[:, -n:])
        k = rope(heads(attn.k_proj, xn, attn.head_dim), cos, sin)
        return self._mlp(x[:, -n:] + attend(attn, q, k, heads(attn.v_proj, xn, attn.head_dim), mask))

    def forward_cached(self, x: torch.Tensor, cos, sin, cache: KVCache) -> torch.Tensor:
        """Entries x [1, n, d] at indices ``[cache.length, cache.length + n)``, appended to ``cache`` (one layer):
        the output g [1, d] of the last, attending to its last ``window`` entries. An entry's keys and values depend
        on its own input only, so the others cost their projections alone (a catch-up over a prompt, too)."""
        attn, start, n = self.layer.self_attn, cache.length, x.shape[1]
        xn = self.layer.input_layernorm(x)
        q = rope(heads(attn.q_proj, xn[:, -1:], attn.head_dim), cos[:, -1:], sin[:, -1:])
        k = rope(heads(attn.k_proj, xn, attn.head_dim), cos, sin)
        k_all, v_all = cache.write(0, k, heads(attn.v_proj, xn, attn.head_dim))
        key_from = max(0, start + n - self.window)
        out = attend(attn, q, k_all[:, :, key_from:], v_all[:, :, key_from:], None)
        cache.advance(n)
        return self._mlp(x[:, -1:] + out)[:, 0]


class FeatureDrafterModel(nn.Module):
    """The net and its LoRA head, with the model's embedding and rotary embedding (read-only, not its own), and what
    the packed head reads of a model (``drafter_head``, ``head_precision``, ``head_frozen``, ``packed_head``)."""

    def __init__(self, model, window: int = DEFAULT_WINDOW, r: int = 64, alpha: float = 64.0,
                 init: str = "identity"):
        super().__init__()
        cfg = model.config
        w = model.head_model.weight
        self.net = FeatureNet(cfg, window).to(device=w.device, dtype=w.dtype)
        self.net.initialise(init, float(getattr(cfg, "initializer_range", 0.02)), model.base_model)
        self.drafter_head = DrafterHead.from_verifier_head(model.head_model, r=r, alpha=alpha,
                                                           rows=model.drafter_vocab)
        self.init = init
        self.__dict__["embed_tokens"] = model.embed_tokens   # the model's, frozen: not a submodule
        self.__dict__["rotary_emb"] = model.rotary_emb
        self.drafter_vocab = model.drafter_vocab
        self.packed_head = None

    @property
    def window(self) -> int:
        return self.net.window

    @property
    def device(self) -> torch.device:
        return self.drafter_head.weight_device

    @property
    def dtype(self) -> torch.dtype:
        return self.drafter_head.weight_dtype

    def drafter_logits_from_hk(self, g: torch.Tensor) -> torch.Tensor:
        """The head's logits [..., N] float32 over the drafter's columns (``packed_head.propose``'s float32 path)."""
        return self.drafter_head(g)

    def metadata(self) -> dict:
        return {"window": int(self.window), "init": self.init, **self.drafter_head.metadata()}

    def new_cache(self, max_len: int) -> KVCache:
        a = self.net.layer.self_attn
        return KVCache(1, a.config.num_key_value_heads, a.head_dim, max_len, dtype=self.dtype, device=self.device)

    def entries(self, f: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x = fc([f ; e(ids)]) for features f [..., d] and the tokens after them, ids [...]."""
        return self.net.inputs(f.to(self.dtype), self.embed_tokens(ids.to(self.device)))

    @torch.no_grad()
    def step(self, f: torch.Tensor, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Draft time: entries (f [n, d], ids [n]) appended to ``cache``; g [1, d] of the last one."""
        x = self.entries(f, ids)[None]
        cos, sin = rotary_for(self.rotary_emb, x, cache.length)
        return self.net.forward_cached(x, cos, sin, cache)

    def segment_outputs(self, seg_f: torch.Tensor, seg_ids: torch.Tensor, seg_len: torch.Tensor,
                        seg_pos: torch.Tensor) -> torch.Tensor:
        """Training: segments of entries, right-aligned (row W-1 is the tuple's entry; its ``seg_len`` rows ending
        there are valid, the rows before are padding; ``seg_pos`` is the index of the first valid one): seg_f
        [B, W, d], seg_ids [B, W]. Returns g [B, d] of each tuple's entry, differentiable in the net."""
        x = self.entries(seg_f, seg_ids.clamp(min=0))
        W = x.shape[1]
        rows = torch.arange(W, device=x.device)[None, :]
        pad = (W - seg_len.to(x.device))[:, None]
        positions = (seg_pos.to(x.device)[:, None] + rows - pad).clamp(min=0)  # padding: any position, masked
        cos, sin = self.rotary_emb(x, positions)
        return self.net.forward_rows(x, cos, sin, 1, (rows >= pad)[:, None, None, :])[:, 0]

    @torch.no_grad()
    def teacher_forced(self, f: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """g [T-1, d] of every entry of one sequence: f [T, d] the verifier's features at positions 0..T-1, tokens
        [T] the tokens there; entry k = (f_k, tokens[k+1]), each attending to its last ``window`` entries."""
        x = self.entries(f[:-1], tokens[1:])[None]
        cos, sin = rotary_for(self.rotary_emb, x, 0)
        _, mask = window_mask(0, x.shape[1], self.window, x.device)
        return self.net.forward_rows(x, cos, sin, x.shape[1], mask)[0]


@torch.no_grad()
def teacher_forced_top1(model, features: torch.Tensor, tokens: torch.Tensor) -> list[int]:
    """The feature drafter's top-1 predictions over one held-out sequence, teacher-forced, for an evaluator:
    ``features`` [T, d] the verifier's post-norm last-layer states at positions 0..T-1 (``Verification.features``,
    ``FeatureLog``), ``tokens`` [T] the token ids at those positions. Returns T - 1 full-vocabulary ids: entry
    k = 0..T-2 predicts the token at position k + 2 (compare with ``tokens[k + 2]``, or with the verifier's argmax
    at position k + 1; the last entry's has no token in ``tokens``)."""
    fd = model.feature_drafter
    g = fd.teacher_forced(features, tokens)
    cols = fd.drafter_logits_from_hk(g).argmax(-1).tolist()
    return [model.drafter_token_id(c) for c in cols]


def attach_feature_drafter(model, window: int = DEFAULT_WINDOW, r: int = 64, alpha: float = 64.0,
                           init: str = "identity") -> FeatureDrafterModel:
    """Give ``model`` (a ``KangarooModel``) a feature drafter (after ``set_drafter_vocab``: its head is pruned the
    same way); its caches then keep the verifier's features per position (``KangarooCaches.features``)."""
    model.feature_drafter = FeatureDrafterModel(model, window, r, alpha, init)
    return model.feature_drafter


def feature_tensors(fd: Optional[FeatureDrafterModel]) -> dict[str, nn.Parameter]:
    """The feature drafter's trained tensors by name, in a fixed order: its net's, then its head's LoRA A and B."""
    if fd is None:
        return {}
    return {**{f"net.{n}": p for n, p in fd.net.named_parameters()},
            **{f"head.{n}": p for n, p in fd.drafter_head.named_trainable().items()}}
