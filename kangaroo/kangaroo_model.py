"""KangarooModel: one frozen Llama split at layer k into a drafter and a verifier.

    drafter:   embed -> shallow_stack (layers [0, k)) -> h_k -> adapter -> hk -> drafter head -> draft logits
    verifier:  h_k -> layers [k, L) -> final norm -> head_model -> verifier logits

The verifier reuses the drafter's h_k (never recomputed), so a verified block costs one pass of the deep
layers. ``adapter_mode="none"`` builds the identity adapter: the shallow stack is a frozen copy of the base
layers [0, k) and hk = final_norm(h_k), derived from the base config with no file access.
``adapter_mode="load"`` reads a Kangaroo adapter folder (``kangaroo/adapter.py``), frozen.
``adapter_mode="train"`` builds an adapter DVI trains online (``kangaroo/trained_adapter.py``: the identity
drafter at step 0, or ``adapter_path`` as the start), attending over the last ``adapter_window`` positions; its
shallow cache also keeps the layer-k residual of every position (``KVCache.rows``), which the training segments
of each block are cut from (``segment_context``).

An adapter with a window (trained, or loaded with one) runs only when something reads hk: the shallow pass keeps
the rows and ``ShallowOut.hk`` runs the adapter's layer over the window's rows on first use, so a block that drafts
nothing from the self-drafter (a declined probe, an n-gram block) never pays for it. An adapter over the whole
context (the Kangaroo repo's) keeps its keys and values as one more layer of the shallow cache instead.

The base model, its head (``head_model``) and the shallow copies are frozen (a trained adapter is a copy of its
own). The model holds the split verifier; the drafter's trainable part (a LoRA ``DrafterHead``, and a trained
adapter) is attached and listed by ``kangaroo/drafter_head.py`` (``attach_drafter_head``, ``trainable_params``);
the model only projects through the head when one is attached.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from common.errors import ConfigError, UserError
from kangaroo import cpu_engine
from kangaroo.blocks import HiddenContext
from kangaroo.feature_log import FeatureContext, FeatureLog
from kangaroo.llama_forward import final_norm, new_cache, pass_mask, pass_rope, project, rotary_for, run_layers
from kangaroo.kv_cache import KVCache
from kangaroo.shallow import ShallowOut
from kangaroo.token_tree import TreeSlots

DEFAULT_EXIT_LAYER = 2  # k: the drafter is layers [0, k) (--exitlayer's default; the one place it is written)


def check_exit_layer(exit_layer: int, config) -> None:
    """The drafter is layers [0, k) and the verifier [k, L): both need at least one layer."""
    n = config.num_hidden_layers
    if not 1 <= exit_layer <= n - 1:
        raise ConfigError(f"--exitlayer {exit_layer} is outside 1..{n - 1} for this {n}-layer model: pick a layer in "
                          f"that range (default {DEFAULT_EXIT_LAYER})")


@dataclass
class KangarooCaches:
    shallow: KVCache  # layers [0, k) (+ the adapter's layer)
    deep: KVCache     # layers [k, L)
    features: Optional[FeatureLog] = None  # the verifier's features per position (a model with a feature drafter)

    def crop(self, n: int) -> None:
        self.shallow.crop(n)
        self.deep.crop(n)
        if self.features is not None:
            self.features.crop(n)

    def keep(self, slots: list[int], at: int) -> None:
        """Both caches: the positions ``slots`` moved to ``at, at + 1, ..``, the rest dropped (``KVCache.keep``)."""
        self.shallow.keep(slots, at)
        self.deep.keep(slots, at)
        if self.features is not None:
            self.features.keep(slots, at)


class KangarooModel(nn.Module):
    def __init__(self, *, model_id: str, adapter_mode: str = "none", adapter_path: Optional[str] = None,
                 exit_layer: int = DEFAULT_EXIT_LAYER, device: str = "cpu", dtype: str | torch.dtype = "float32",
                 base_model=None, adapter_window: Optional[int] = None):
        super().__init__()
        if base_model is None:
            from kangaroo.model_loading import load_causal_lm

            base_model = load_causal_lm(model_id, device=device, dtype=dtype)
        base_cfg = base_model.config
        check_exit_layer(exit_layer, base_cfg)
        base_model.requires_grad_(False)
        self.model_id = model_id
        self.exit_layer = exit_layer
        self.base_model = base_model
        self.config = base_cfg
        body = base_model.model
        self.embed_tokens = body.embed_tokens
        self.rotary_emb = body.rotary_emb
        self.deep_layers = body.layers[exit_layer:]
        self.norm = body.norm
        self.head_model = base_model.lm_head  # the verifier's head: frozen, never modified
        self.drafter_head = None
        self.feature_drafter = None      # the feature drafter (kangaroo/feature_drafter.py), when attached
        self.drafter_vocab = None        # [N] int64 full-vocabulary ids the drafter may draft (None: all V)
        self._pruned_head_weight = None  # [N, d] rows of the verifier's head for the identity drafter
        self._build_identity_adapter_from_base(base_cfg, exit_layer)
        self.adapter = None
        self.trained_adapter = None  # the adapter when DVI trains it (adapter_mode "train"), else None
        if adapter_mode == "load":
            from kangaroo.adapter import load_adapter

            self.adapter = load_adapter(adapter_path, base_cfg).to(device=self.device, dtype=self.dtype)
            self.adapter.requires_grad_(False)
        elif adapter_mode == "train":
            from kangaroo.trained_adapter import DEFAULT_WINDOW, trained_adapter

            self.adapter = self.trained_adapter = trained_adapter(base_model, exit_layer,
                                                                  adapter_window or DEFAULT_WINDOW, adapter_path)
        elif adapter_mode != "none":
            raise UserError(f"--adapter-mode {adapter_mode!r}: use none, load or train")
        self.adapter_config.is_identity = self.adapter is None
        self.eval()

    def _build_identity_adapter_from_base(self, base_cfg, exit_layer: int) -> None:
        """Shallow stack = frozen copies of base layers [0, k); metadata derived from the base config."""
        cfg = copy.deepcopy(base_cfg)
        cfg.num_hidden_layers = exit_layer
        cfg.is_identity = True  # no adapter file exists or is expected
        self.adapter_config = cfg
        self.shallow_stack = nn.ModuleList(copy.deepcopy(self.base_model.model.layers[i]) for i in range(exit_layer))
        self.shallow_stack.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.head_model.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head_model.weight.dtype

    # ------------------------------------------------------------------------------------------ caches
    def new_caches(self, max_len: int) -> KangarooCaches:
        n_shallow = self.exit_layer + (self.adapter is not None and not self.lazy_adapter)
        rows = self.config.hidden_size if self.lazy_adapter else 0
        features = None if self.feature_drafter is None else FeatureLog(max_len, self.config.hidden_size,
                                                                         self.dtype, self.device)
        return KangarooCaches(
            shallow=new_cache(self.config, n_shallow, max_len, self.dtype, self.device, row_width=rows),
            deep=new_cache(self.config, self.config.num_hidden_layers - self.exit_layer, max_len, self.dtype,
                           self.device), features=features)

    # ------------------------------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward_shallow(self, input_ids: torch.Tensor, cache: KVCache, tree: Optional[TreeSlots] = None) -> ShallowOut:
        """Tokens [1, n] -> layer-k hidden h and drafter features hk, appended to the shallow cache (``tree``: the
        tokens are nodes of that token tree, ``kangaroo/token_tree.py``)."""
        start = cache.length
        h = run_layers(self.shallow_stack, self.embed_tokens(input_ids), cache, self.rotary_emb, tree)
        return self.shallow_out(h, cache, start, tree)

    @property
    def lazy_adapter(self) -> bool:
        """An adapter with a window: it runs from the cache's rows when hk is read (the module docstring)."""
        return self.adapter is not None and self.adapter.window is not None

    @torch.no_grad()
    def shallow_out(self, h: torch.Tensor, cache: KVCache, start: int, tree: Optional[TreeSlots] = None) -> ShallowOut:
        """The drafter features of the shallow stack's output h [1, n, d] at positions ``[start, start + n)`` (the
        cache already advanced past them): final_norm(h); or, with a windowed adapter, h into the cache's rows and
        the adapter's layer over the window's rows when hk is read; or an adapter over the whole context, its layer
        written into the same cache positions. ``tree``: the rows are nodes of that tree (each its own path's
        window, its own ancestors)."""
        n = h.shape[1]
        if self.adapter is None:
            return ShallowOut(h, final_norm(self.norm, h))
        cache.crop(start)
        if self.lazy_adapter:
            cache.write_rows(h)
            cache.advance(n)
            if tree is not None:
                windows = [self._path_window(cache, tree, start + r) for r in range(n)]
                return ShallowOut(h, features=lambda: torch.cat([self._window_features(w, f, 1) for w, f in windows],
                                                                dim=1))
            first = max(0, start - self.adapter.window + 1)
            rows = cache.read_rows(first, start + n)[None]  # a copy: the cache may move on before hk is read
            return ShallowOut(h, features=lambda: self._window_features(rows, first, n))
        cos, sin = pass_rope(self.rotary_emb, h, start, tree)
        hk = self.adapter(h, cos, sin, cache, self.exit_layer, pass_mask(start, n, h.device, tree))
        cache.advance(n)
        return ShallowOut(h, hk)

    def _path_window(self, cache: KVCache, tree: TreeSlots, slot: int) -> tuple[torch.Tensor, int]:
        """A tree node's window of rows (a copy, [1, L, d]): the positions of its root-to-node path, consecutive, as
        a chain would hold them; and the position of the first."""
        node = slot - tree.root
        pos = tree.root + tree.tree.depths[node]
        first = max(0, pos - self.adapter.window + 1)
        slots = list(range(first, tree.root)) + [tree.root + a for a in tree.tree.path(node)][first - pos - 1:]
        return cache.rows[0, slots].clone()[None], first

    @torch.no_grad()
    def _window_features(self, rows: torch.Tensor, first: int, n: int) -> torch.Tensor:
        """The windowed adapter over ``rows`` [1, L, d] (positions ``[first, first + L)``): hk of the last n."""
        cos, sin = rotary_for(self.rotary_emb, rows, first)
        return self.adapter.forward_rows(rows, cos, sin, n)

    def segment_context(self, shallow: KVCache, start: int, end: int) -> Optional[HiddenContext]:
        """With a trained adapter: the layer-k residuals its training segments ending at positions ``[start, end)``
        need (the ``window - 1`` positions before ``start`` too), copied out of the shallow cache; else None."""
        if self.trained_adapter is None:
            return None
        first = max(0, start - self.trained_adapter.window + 1)
        return HiddenContext(shallow.read_rows(first, end), first, self.trained_adapter.window)

    def feature_context(self, caches: KangarooCaches, start: int, end: int) -> Optional[FeatureContext]:
        """With a feature drafter: the features and tokens its training segments for the rows of positions
        ``[start, end)`` need (the ``window`` positions before ``start`` too), copied out of the log; else None."""
        if self.feature_drafter is None or caches.features is None:
            return None
        return caches.features.context(start - self.feature_drafter.window, end, self.feature_drafter.window)

    @torch.no_grad()
    def forward_deep(self, h: torch.Tensor, cache: KVCache, tree: Optional[TreeSlots] = None) -> torch.Tensor:
        """Layer-k hidden [1, n, d] -> final post-norm hidden [1, n, d], appended to the deep cache (``tree``: the
        rows are nodes of that token tree)."""
        return final_norm(self.norm, run_layers(self.deep_layers, h, cache, self.rotary_emb, tree))

    @torch.no_grad()
    def verifier_logits(self, h_final: torch.Tensor) -> torch.Tensor:
        return project(h_final, self.head_model.weight)

    def drafter_logits_from_hk(self, hk: torch.Tensor) -> torch.Tensor:
        """The drafter's logits: the LoRA drafter head when attached, else the verifier's head (plain Kangaroo).
        With a pruned drafter vocabulary (``set_drafter_vocab``) the columns are the N kept tokens, in the order
        of ``drafter_vocab``; map a column back with ``drafter_token_id``."""
        if self.drafter_head is None:
            with torch.no_grad():
                return project(hk, self.identity_head_weight).float()
        return self.drafter_head(hk)

    @property
    def identity_head_weight(self) -> torch.Tensor:
        """The rows the identity drafter projects onto: the verifier's head, or its kept rows when pruned."""
        return self.head_model.weight if self._pruned_head_weight is None else self._pruned_head_weight

    def drafter_token_id(self, idx) -> int:
        """Full-vocabulary id of the drafter's column ``idx``."""
        i = int(idx)
        return i if self.drafter_vocab is None else int(self.drafter_vocab[i])

    def set_drafter_vocab(self, ids) -> None:
        """Prune the drafter's head to the tokens ``ids`` (FR-Spec); None restores the full vocabulary. The
        verifier keeps the full vocabulary, so the output is unchanged. Call before
        ``drafter_head.attach_drafter_head``."""
        if self.drafter_head is not None:
            raise RuntimeError("set the drafter vocabulary before attaching the LoRA drafter head")
        if ids is None:
            self.drafter_vocab = self._pruned_head_weight = None
            return
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        V = self.head_model.weight.shape[0]
        distinct = len(set(ids.tolist())) == len(ids)
        if ids.dim() != 1 or not len(ids) or int(ids.min()) < 0 or int(ids.max()) >= V or not distinct:
            raise ValueError(f"drafter vocabulary must be distinct ids in 0..{V - 1}")
        self.drafter_vocab = ids
        self._pruned_head_weight = self.head_model.weight.detach()[ids].clone()
        stored = cpu_engine.stored_of(self.head_model)  # the engine reads those rows as the head is stored
        if stored is not None:
            cpu_engine.register_weight(self._pruned_head_weight, stored.select_rows(ids.cpu()))
