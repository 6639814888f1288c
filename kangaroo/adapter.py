"""The Kangaroo paper's adapter: one self-attention block with its norms, on top of the layer-k hidden state.

    hk = norm(h + self_attn(input_layernorm(h)))

It has its own KV cache layer (the last layer of the shallow cache). On disk an adapter is a folder:

    config.json          {"format": "kangaroo-adapter", "version": 1, "hidden_size", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "rms_norm_eps"}
    adapter.safetensors  input_layernorm.weight, self_attn.{q,k,v,o}_proj.weight, norm.weight
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from kangaroo.errors import UserError
from kangaroo.llama_forward import attention

FORMAT = "kangaroo-adapter"
CONFIG_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps")


class KangarooAdapter(nn.Module):
    def __init__(self, base_config):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm

        self.config = base_config
        self.input_layernorm = LlamaRMSNorm(base_config.hidden_size, eps=base_config.rms_norm_eps)
        self.self_attn = LlamaAttention(base_config, layer_idx=0)
        self.norm = LlamaRMSNorm(base_config.hidden_size, eps=base_config.rms_norm_eps)

    def forward(self, h, cos, sin, cache, cache_layer: int, mask) -> torch.Tensor:
        return self.norm(h + attention(self.self_attn, self.input_layernorm(h), cos, sin, cache, cache_layer, mask))


def adapter_config_dict(base_config) -> dict:
    head_dim = getattr(base_config, "head_dim", None) or base_config.hidden_size // base_config.num_attention_heads
    d = {k: getattr(base_config, k) for k in CONFIG_KEYS if k != "head_dim"}
    return {"format": FORMAT, "version": 1, **d, "head_dim": head_dim}


def save_adapter(adapter: KangarooAdapter, path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(adapter_config_dict(adapter.config), indent=2))
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()},
              str(path / "adapter.safetensors"))


def load_adapter(path: str | Path, base_config) -> KangarooAdapter:
    """Read an adapter folder; refuse a missing, damaged or mismatched one with a clear error."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, w_file = path / "config.json", path / "adapter.safetensors"
    if not cfg_file.is_file() or not w_file.is_file():
        raise UserError(f"--adapter-path {path}: expected config.json and adapter.safetensors there "
                        "(format in kangaroo/adapter.py); or pass --adapter-path none for the identity adapter")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"--adapter-path {path}: config.json is not valid JSON ({e})") from e
    want = adapter_config_dict(base_config)
    if cfg.get("format") != FORMAT:
        raise UserError(f"--adapter-path {path}: config.json format is {cfg.get('format')!r}, expected {FORMAT!r}")
    diff = [f"{k}={cfg.get(k)} (model has {want[k]})" for k in CONFIG_KEYS if cfg.get(k) != want[k]]
    if diff:
        raise UserError(f"--adapter-path {path} was made for another model: {', '.join(diff)}; "
                        "pass the adapter trained for this --model-id")
    adapter = KangarooAdapter(base_config)
    try:
        state = load_file(str(w_file))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise UserError(f"--adapter-path {path}: adapter.safetensors is damaged ({e})") from e
    missing, unexpected = adapter.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"--adapter-path {path}: weights do not match the adapter "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    return adapter
