"""The Kangaroo adapter trained online (``--adapter-mode train``): a fresh adapter that starts as the identity
drafter, or an adapter folder to start from, with a sliding attention window.

Identity start (``identity_adapter``): input_layernorm and q/k/v are copies of base layer k's (the layer the
adapter stands in for: the first verifier layer, which reads the same h_k), o_proj is zero and the output norm is
the model's final norm. With o_proj = 0 the attention adds nothing, so hk = final_norm(h_k): at step 0 the drafter
is exactly the identity drafter, and training moves it from there (o_proj first: its gradient is the only one
that is not zero at step 0).

Window: the adapter attends over the last ``window`` positions only (itself included), at draft time as in
training, where each tuple carries the layer-k residuals of those positions (``dvi/buffer.py``) and the trainer
runs the adapter over that segment (``KangarooAdapter.forward_last``); at draft time ``KangarooAdapter.forward_rows``
runs it over the cache's rows of the window, only where a draft reads hk (``KangarooModel.shallow_out``), under
the weights of the moment (docs/dvi.md).
"""
from __future__ import annotations

from typing import Optional

import torch

from common.config_fields import at_least
from common.errors import ConfigError
from kangaroo.adapter import KangarooAdapter, load_adapter

DEFAULT_WINDOW = 16
WINDOW_RULE = at_least(1, "positions the adapter's attention sees")


def check_window(window: int) -> None:
    """``--dvi-adapter-window``: the one check of the trained adapter's window (the CLI and the model call it)."""
    if not WINDOW_RULE.ok(window):
        raise ConfigError(WINDOW_RULE.message("--dvi-adapter-window", window))


@torch.no_grad()
def identity_adapter(base_model, exit_layer: int, window: int) -> KangarooAdapter:
    """An adapter whose output is final_norm(h) exactly, with layer ``exit_layer``'s attention weights as its start.
    Every tensor is a copy: training it never touches the base model."""
    layer, final = base_model.model.layers[exit_layer], base_model.model.norm
    w = layer.self_attn.q_proj.weight
    adapter = KangarooAdapter(base_model.config, window).to(device=w.device, dtype=w.dtype)
    mine, theirs = adapter.self_attn, layer.self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
        getattr(mine, name).load_state_dict(getattr(theirs, name).state_dict())  # weight (and bias, if any)
    for t in mine.o_proj.parameters():
        t.zero_()
    adapter.input_layernorm.weight.copy_(layer.input_layernorm.weight)
    adapter.input_layernorm.variance_epsilon = layer.input_layernorm.variance_epsilon
    adapter.norm.weight.copy_(final.weight)
    adapter.norm.variance_epsilon = final.variance_epsilon
    return adapter


def trained_adapter(base_model, exit_layer: int, window: int, path: Optional[str] = None) -> KangarooAdapter:
    """The adapter ``--adapter-mode train`` trains: the identity start, or the folder ``path`` (its own window
    replaced by ``window``); its parameters require gradients."""
    check_window(window)
    if path is None:
        adapter = identity_adapter(base_model, exit_layer, window)
    else:
        w = base_model.model.layers[0].self_attn.q_proj.weight
        adapter = load_adapter(path, base_model.config).to(device=w.device, dtype=w.dtype)
        adapter.window = window
    adapter.requires_grad_(True)
    return adapter


def adapter_tensors(adapter: Optional[KangarooAdapter]) -> dict[str, torch.nn.Parameter]:
    """The trained adapter's tensors by name (a fixed order: optimizers and checkpoints rely on it)."""
    return {} if adapter is None else dict(adapter.named_parameters())
