"""The Kangaroo paper's adapter: one self-attention block with its norms, on top of the layer-k hidden state.

    hk = norm(h + self_attn(input_layernorm(h)))

Over the whole context it has its own KV cache layer (the last layer of the shallow cache); with a window it
caches nothing and runs over the rows of its window (``forward_rows``). On disk an adapter is a folder:

    config.json          {"format": "kangaroo-adapter", "version": 1, "hidden_size", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "rms_norm_eps", "window" (optional)}
    adapter.safetensors  input_layernorm.weight, self_attn.{q,k,v,o}_proj.weight, norm.weight

The Kangaroo repo's released adapters load too (``load_adapter`` tells the layouts apart):

    config.json          a LlamaConfig with num_hidden_layers 1 (its hidden size and heads must match the model)
    pytorch_model.bin    layers.0.input_layernorm.weight, layers.0.self_attn.{q,k,v,o}_proj.weight, norm.weight
                         (or model.safetensors with the same names; rotary buffers, if present, are ignored)

``window`` (an adapter trained online, ``kangaroo/trained_adapter.py``): the adapter's attention sees only the
last ``window`` positions (itself included), the context it was trained on; absent or null: the whole context.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from common.atomic import atomic_write_bytes, atomic_write_text
from common.errors import UserError
from kangaroo.llama_forward import attend, attention, heads, rope, window_mask

FORMAT = "kangaroo-adapter"
CONFIG_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps")


class KangarooAdapter(nn.Module):
    def __init__(self, base_config, window: int | None = None):
        super().__init__()
        self.window = window  # None: attend over the whole context; else the last ``window`` positions
        from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm

        self.config = base_config
        self.input_layernorm = LlamaRMSNorm(base_config.hidden_size, eps=base_config.rms_norm_eps)
        self.self_attn = LlamaAttention(base_config, layer_idx=0)
        self.norm = LlamaRMSNorm(base_config.hidden_size, eps=base_config.rms_norm_eps)

    def forward(self, h, cos, sin, cache, cache_layer: int, mask) -> torch.Tensor:
        """h [1, n, d] appended to ``cache`` layer ``cache_layer`` (an adapter over the whole context)."""
        x = self.input_layernorm(h)
        return self.norm(h + attention(self.self_attn, x, cos, sin, cache, cache_layer, mask))

    def forward_rows(self, h: torch.Tensor, cos, sin, n: int) -> torch.Tensor:
        """Consecutive rows h [1, L, d] and their RoPE cos/sin [1, L, D] (no cache): the output [1, n, d] at the
        last n rows, each query attending to its last ``window`` rows (itself included) as far as h reaches back.
        That is ``forward``'s output for those rows when the cache holds exactly h's earlier rows."""
        key_from, mask = window_mask(h.shape[1] - n, n, self.window, h.device)
        return self._last_rows(h[:, key_from:], cos[:, key_from:], sin[:, key_from:], n, mask)

    def forward_last(self, h: torch.Tensor, cos, sin, valid: torch.Tensor) -> torch.Tensor:
        """Segments h [B, W, d] (no cache), their RoPE cos/sin [B, W, D], valid [B, W] (False: padding; the last
        row is valid): the output at each segment's last row, [B, d], its query attending every valid row. That
        is ``forward``'s output for that row when the cache holds exactly the segment's rows before it."""
        return self._last_rows(h, cos, sin, 1, valid[:, None, None, :])[:, 0]

    def _last_rows(self, h: torch.Tensor, cos, sin, n: int, mask) -> torch.Tensor:
        """The output [B, n, d] at the last n rows of h [B, L, d] (no cache), their queries attending h's rows
        under ``mask`` (None: all of them)."""
        x, attn = self.input_layernorm(h), self.self_attn
        q = rope(heads(attn.q_proj, x[:, -n:], attn.head_dim), cos[:, -n:], sin[:, -n:])
        k = rope(heads(attn.k_proj, x, attn.head_dim), cos, sin)
        out = attend(attn, q, k, heads(attn.v_proj, x, attn.head_dim), mask)
        return self.norm(h[:, -n:] + out)


def adapter_config_dict(base_config, window: int | None = None) -> dict:
    head_dim = getattr(base_config, "head_dim", None) or base_config.hidden_size // base_config.num_attention_heads
    d = {k: getattr(base_config, k) for k in CONFIG_KEYS if k != "head_dim"}
    return {"format": FORMAT, "version": 1, **d, "head_dim": head_dim, "window": window}


def save_adapter(adapter: KangarooAdapter, path: str | Path) -> None:
    """The adapter as a folder (``config.json``, ``adapter.safetensors``), each file written atomically."""
    from safetensors.torch import save

    path = Path(path)
    atomic_write_bytes(path / "adapter.safetensors",
                       save({k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}))
    atomic_write_text(path / "config.json", json.dumps(adapter_config_dict(adapter.config, adapter.window), indent=2))


KANGAROO_WEIGHTS = ("pytorch_model.bin", "model.safetensors")
IGNORED = (".rotary_emb.inv_freq", ".rotary_emb.cos_cached", ".rotary_emb.sin_cached")


def _read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"--adapter-path {path}: no config.json there (an adapter folder holds config.json with "
                        "adapter.safetensors, or the Kangaroo repo's pytorch_model.bin); or pass --adapter-path none")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--adapter-path {path}: config.json is not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise UserError(f"--adapter-path {path}: config.json is not a JSON object")
    return cfg


def _kangaroo_repo_config(cfg: dict) -> dict:
    """Our config keys from a released adapter's LlamaConfig (defaults as LlamaConfig fills them)."""
    heads = cfg.get("num_attention_heads")
    hidden = cfg.get("hidden_size")
    return {"hidden_size": hidden, "num_attention_heads": heads,
            "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
            "head_dim": cfg.get("head_dim") or (hidden // heads if hidden and heads else None),
            "rms_norm_eps": cfg.get("rms_norm_eps", 1e-6)}


def _read_weights(w_file: Path) -> dict:
    try:
        if w_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(w_file))
        state = torch.load(w_file, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged zip/pickle/safetensors, or a pickle that would run code
        raise UserError(f"--adapter-path {w_file.parent}: {w_file.name} is damaged or not plain tensors "
                        f"({type(e).__name__}): use another copy of the adapter") from e
    if not isinstance(state, dict):
        raise UserError(f"--adapter-path {w_file.parent}: {w_file.name} does not hold a state dict")
    return state


def _from_kangaroo_repo(state: dict) -> dict:
    """``layers.0.X`` -> ``X``; ``norm.weight`` stays; rotary buffers are dropped."""
    out = {}
    for k, v in state.items():
        if k.endswith(IGNORED):
            continue
        out[k[len("layers.0."):] if k.startswith("layers.0.") else k] = v
    return out


def load_adapter(path: str | Path, base_config) -> KangarooAdapter:
    """Read an adapter folder (ours or the Kangaroo repo's); refuse a missing, damaged or mismatched one."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--adapter-path {path} is not a folder: expected config.json and adapter.safetensors (or "
                        "the Kangaroo repo's pytorch_model.bin) in a folder; or pass --adapter-path none")
    cfg = _read_config(path)
    ours = path / "adapter.safetensors"
    theirs = next((path / n for n in KANGAROO_WEIGHTS if (path / n).is_file()), None)
    if cfg.get("format") == FORMAT and ours.is_file():
        w_file, layout = ours, "ours"
    elif cfg.get("format") is None and theirs is not None:
        if cfg.get("num_hidden_layers", 1) != 1:
            raise UserError(f"--adapter-path {path}: config.json has num_hidden_layers "
                            f"{cfg.get('num_hidden_layers')}, a Kangaroo adapter has 1: pass an adapter folder")
        w_file, layout, cfg = theirs, "kangaroo", _kangaroo_repo_config(cfg)
    else:
        raise UserError(f"--adapter-path {path}: expected config.json with adapter.safetensors (format "
                        f"{FORMAT!r}) or the Kangaroo repo's config.json with pytorch_model.bin (see "
                        "kangaroo/adapter.py); or pass --adapter-path none for the identity adapter")
    want = adapter_config_dict(base_config)
    diff = [f"{k}={cfg.get(k)} (model has {want[k]})" for k in CONFIG_KEYS
            if k != "rms_norm_eps" and cfg.get(k) != want[k]]
    if diff:
        raise UserError(f"--adapter-path {path} was made for another model: {', '.join(diff)}; "
                        "pass the adapter trained for this --model-id")
    window = cfg.get("window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise UserError(f"--adapter-path {path}: config.json has window {window!r}, expected a positive integer "
                        "or null (attend over the whole context)")
    adapter = KangarooAdapter(base_config, window)
    adapter.input_layernorm.variance_epsilon = adapter.norm.variance_epsilon = float(cfg["rms_norm_eps"])
    state = _read_weights(w_file)
    if layout == "kangaroo":
        state = _from_kangaroo_repo(state)
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise UserError(f"--adapter-path {path}: {w_file.name} holds non-tensor entries ({bad[:3]})")
    shapes = {k: v.shape for k, v in adapter.state_dict().items()}
    wrong = [f"{k} {list(v.shape)} (expected {list(shapes[k])})" for k, v in state.items()
             if k in shapes and v.shape != shapes[k]]
    if wrong:
        raise UserError(f"--adapter-path {path}: weights of the wrong shape: {', '.join(wrong[:3])}; pass the "
                        "adapter trained for this --model-id")
    missing, unexpected = adapter.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"--adapter-path {path}: weights do not match the adapter "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    return adapter
