"""The lean CPU engine (``kangaroo/csrc/cpu_engine.cpp``): the one place that says which route is CPU-only.

It runs a Llama decoder stack, the final norm and the vocabulary head for a few rows at a time (a decode step,
a drafted block to verify: up to ``MAX_ROWS``), float32, on an x86 CPU with AVX2. Everything else takes the
plain path (``kangaroo/llama_forward.py``): CUDA (float16/bfloat16), other dtypes, prefill of long prompts,
layers with biases or another activation, machines without a C++ compiler or AVX2.

Its kernels are batch-invariant: a row's result is the same bits whether it is computed alone or in a block of
n rows, at any thread count. The project's greedy loop and the speculative verify pass both run here, so
verifying a drafted block reproduces greedy decoding exactly, not only up to near-ties.

The extension is compiled once per machine on first use (``torch.utils.cpp_extension``, cached under
``TORCH_EXTENSIONS_DIR``, one build per source text and checkout, ~1 min); the time is printed.
``KANGAROO_ENGINE=plain`` (or ``set_enabled(False)``, the drivers' ``--engine plain``) selects the plain path
everywhere.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
import weakref
from pathlib import Path

import torch

MAX_ROWS = 16  # rows per call the engine takes; more (a prompt's prefill) go to the plain path
_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = [_CSRC / "cpu_engine.cpp", _CSRC / "draft_head.cpp"]  # one extension (draft_head: the drafter head)
_state = {"enabled": os.environ.get("KANGAROO_ENGINE", "auto") != "plain", "ext": None, "failed": False}
_stacks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def set_enabled(enabled: bool) -> None:
    """Select the engine (True) or the plain path (False) for every later call."""
    _state["enabled"] = bool(enabled)


def _notice(msg: str) -> None:
    print(f"[cpu-engine] {msg}", file=sys.stderr, flush=True)


def extension():
    """The compiled extension, built on first use; None (with a one-line notice) where it cannot be built."""
    if _state["ext"] is not None or _state["failed"]:
        return _state["ext"]
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        _state["failed"] = True
        _notice("this CPU has no AVX2: using the plain PyTorch path")
        return None
    t0 = time.perf_counter()
    try:
        from torch.utils.cpp_extension import get_default_build_root, load

        flags = ["-O3", "-march=native", "-mavx2", "-mfma", "-fopenmp"]
        name = _build_name(flags)
        build_dir = Path(get_default_build_root()) / name
        build_dir.mkdir(parents=True, exist_ok=True)
        ext = load(name=name, sources=[str(p) for p in _SOURCES], verbose=False, build_directory=str(build_dir),
                   extra_cflags=flags, extra_ldflags=["-fopenmp"])
    except Exception as e:  # no compiler, no ninja, a failed build: the plain path still runs
        _state["failed"] = True
        _notice(f"could not build the C++ kernels ({type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}); "
                "using the plain PyTorch path (install a C++ compiler and `ninja` for the fast one)")
        return None
    seconds = time.perf_counter() - t0
    if seconds > 2.0:  # a build, not a load of the cached library
        _notice(f"C++ kernels built in {seconds:.0f}s (cached for later runs)")
    _state["ext"] = ext
    return ext


def _build_name(flags: list[str]) -> str:
    """One build per source text, flags and checkout: a second checkout (or an edited source) builds apart, and
    never rewrites a library another running process has loaded."""
    text = b"".join(p.read_bytes() + str(p).encode() for p in _SOURCES)
    key = hashlib.sha1(text + " ".join(flags).encode()).hexdigest()[:12]
    return f"kangaroo_cpu_engine_{key}"


def applies(h: torch.Tensor) -> bool:
    """Whether the engine takes ``h`` [..., n, d]: enabled, CPU float32, at most ``MAX_ROWS`` rows."""
    return (_state["enabled"] and h.device.type == "cpu" and h.dtype == torch.float32
            and h.numel() // h.shape[-1] <= MAX_ROWS and extension() is not None)


def _supported(layer, config) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return (getattr(config, "hidden_act", "silu") == "silu" and all(m.bias is None for m in linears)
            and all(m.weight.dtype == torch.float32 for m in linears))


def _fuse(layer) -> list[torch.Tensor]:
    """The layer's weights as the engine reads them: q/k/v stacked, gate/up stacked. The modules' own weights
    become views into the stacked tensors, so no weight is held twice."""
    cached = getattr(layer, "_engine_weights", None)  # a layer shared by two stacks is fused once
    if cached is not None:
        return cached
    attn, mlp = layer.self_attn, layer.mlp
    out = []
    for mods in ((attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)):
        fused = torch.cat([m.weight.detach() for m in mods]).contiguous()
        row = 0
        for m in mods:
            rows = m.weight.shape[0]
            m.weight = torch.nn.Parameter(fused[row:row + rows], requires_grad=False)
            row += rows
        out.append(fused)
    qkv, gate_up = out
    layer._engine_weights = [layer.input_layernorm.weight.detach().contiguous(), qkv,
                             attn.o_proj.weight.detach().contiguous(),
                             layer.post_attention_layernorm.weight.detach().contiguous(), gate_up,
                             mlp.down_proj.weight.detach().contiguous()]
    return layer._engine_weights


def stack_for(layers) -> "object | None":
    """The engine's prepared copy of ``layers`` (an ``nn.ModuleList`` of Llama decoder layers), built once per
    list and kept while the list lives; None where a layer is not supported."""
    if layers in _stacks:
        return _stacks[layers]
    ext = extension()
    stack = None
    if ext is not None and len(layers) and all(_supported(l, l.self_attn.config) for l in layers):
        a = layers[0].self_attn
        cfg = a.config
        weights = [w for layer in layers for w in _fuse(layer)]
        stack = ext.Stack(weights, cfg.num_attention_heads, cfg.num_key_value_heads, a.head_dim,
                          float(layers[0].input_layernorm.variance_epsilon), float(a.scaling))
    _stacks[layers] = stack
    return stack


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return extension().linear(x, weight)


def rmsnorm(x: torch.Tensor, norm) -> torch.Tensor:
    return extension().rmsnorm(x, norm.weight, float(norm.variance_epsilon))
