"""The lean CPU engine (``kangaroo/csrc/``): the one place that says which route is CPU-only.

It runs a Llama decoder stack, the final norm and the vocabulary head for a few rows at a time (a decode step,
a drafted block to verify: up to ``MAX_ROWS``; several sequences in one call), float32 activations, on an x86
CPU with AVX2 (AVX-512 where the CPU has it). The weights are read in the format they are stored in
(``kangaroo/weight_formats.py``: float32, bfloat16, float16, GGUF Q8_0/Q4_0/Q4_1 blocks) and expanded in
registers to the exact float32 values the plain path multiplies by. Everything else takes the plain path
(``kangaroo/llama_forward.py``): CUDA, other activation dtypes, prefill of long prompts, layers with biases or
another activation, machines without a C++ compiler or AVX2.

Its kernels are batch-invariant: a row's result is the same bits whether it is computed alone or in a block of
n rows, with other sequences, at any thread count, on the AVX2 or the AVX-512 build. The project's greedy loop
and the speculative verify pass both run here, so verifying a drafted block reproduces greedy decoding exactly.

The extension is every ``kangaroo/csrc/*.cpp`` compiled into one module on first use (``torch.utils.
cpp_extension``, cached under ``TORCH_EXTENSIONS_DIR``, one build per source text, flags, CPU and checkout); the
time is printed. ``KANGAROO_ENGINE=plain`` (or ``set_enabled(False)``, the drivers' ``--engine plain``) selects
the plain path everywhere; ``KANGAROO_ENGINE_ISA=avx2`` builds the AVX2 kernels on an AVX-512 CPU. The profiler's
rate probes (``csrc/profiling/``) are a second, small extension built the same way by ``rate_probes()``; decoding
never loads it.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
import weakref
from pathlib import Path

import torch

from kangaroo.weight_formats import StoredWeight, concat_rows

MAX_ROWS = 16  # rows per sequence the engine takes; more (a prompt's prefill) go to the plain path
CSRC = Path(__file__).resolve().parent / "csrc"
FLAGS = ["-O3", "-march=native", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp"]
_state = {"enabled": os.environ.get("KANGAROO_ENGINE", "auto") != "plain", "ext": None, "failed": False}
_probes = {"ext": None, "failed": False}  # the profiler's rate probes (``rate_probes``)
_stacks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_enabled(enabled: bool) -> None:
    """Select the engine (True) or the plain path (False) for every later call."""
    _state["enabled"] = bool(enabled)


def _notice(msg: str) -> None:
    print(f"[cpu-engine] {msg}", file=sys.stderr, flush=True)


def build_flags() -> list[str]:
    isa = os.environ.get("KANGAROO_ENGINE_ISA", "native")
    if isa not in ("native", "avx2"):
        from common.errors import UserError

        raise UserError(f"KANGAROO_ENGINE_ISA={isa!r}: use native or avx2")
    return FLAGS + (["-mno-avx512f"] if isa == "avx2" else [])


def extension():
    """The compiled extension, built on first use; None (with a one-line notice) where it cannot be built."""
    if _state["ext"] is not None or _state["failed"]:  # every engine call asks: no file system on this path
        return _state["ext"]
    return _built(_state, "kangaroo_cpu_engine", sorted(CSRC.glob("*.cpp")), "C++ kernels",
                  "using the plain PyTorch path")


def rate_probes():
    """The profiler's rate probes (``csrc/profiling/rate_probes.cpp``: ``stream_read``, ``fma_rate``), a small
    extension of their own built on first use like ``extension()``; None where it cannot be built."""
    return _built(_probes, "kangaroo_rate_probes", [CSRC / "profiling" / "rate_probes.cpp"], "rate probes",
                  "the profiler cannot measure this core's limits")


def _built(state: dict, stem: str, sources: list[Path], what: str, fallback: str):
    """``state``'s extension, compiled from ``sources`` on first use (cached per ``_build_name``); None, with one
    notice (``what`` could not be built; ``fallback``), where this CPU has no AVX2 or the build fails."""
    if state["ext"] is not None or state["failed"]:
        return state["ext"]
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        state["failed"] = True
        _notice(f"this CPU has no AVX2: {fallback}")
        return None
    t0 = time.perf_counter()
    try:
        from torch.utils.cpp_extension import get_default_build_root, load

        flags = build_flags()
        name = _build_name(stem, sources, flags)
        build_dir = Path(get_default_build_root()) / name
        build_dir.mkdir(parents=True, exist_ok=True)
        ext = load(name=name, sources=[str(p) for p in sources], verbose=False, build_directory=str(build_dir),
                   extra_cflags=flags, extra_ldflags=["-fopenmp"], extra_include_paths=[str(CSRC)])
    except Exception as e:  # no compiler, no ninja, a failed build: the plain path still runs
        state["failed"] = True
        _notice(f"could not build the {what} ({type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}); "
                f"{fallback} (install a C++ compiler and `ninja` for the fast one)")
        return None
    seconds = time.perf_counter() - t0
    if seconds > 2.0:  # a build, not a load of the cached library
        _notice(f"{what} ({ext.isa}) built in {seconds:.0f}s (cached for later runs)")
    state["ext"] = ext
    return ext


def cpu_features() -> str:
    """The CPU's vector features (what -march=native compiles for)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(f for f in line.split() if f.startswith(("avx", "fma", "f16c", "sse", "bmi"))))
    except OSError:
        pass
    import platform

    return platform.processor() + " " + str(torch.backends.cpu.get_cpu_capability())


def _build_name(stem: str, sources: list[Path], flags: list[str]) -> str:
    """One build per source text (``sources`` and every header of csrc/), flags, CPU and checkout: a second
    checkout (or an edited source) builds apart, and never rewrites a library another running process has loaded."""
    h = hashlib.sha1()
    for p in list(sources) + sorted(CSRC.glob("*.h")):
        h.update(p.name.encode() + p.read_bytes())
    h.update(str(CSRC).encode() + " ".join(flags).encode() + cpu_features().encode())
    return f"{stem}_{h.hexdigest()[:12]}"


def applies(h: torch.Tensor) -> bool:
    """Whether the engine takes ``h`` [..., n, d]: enabled, CPU float32, at most ``MAX_ROWS`` rows."""
    return (_state["enabled"] and h.device.type == "cpu" and h.dtype == torch.float32
            and h.numel() // h.shape[-1] <= MAX_ROWS and extension() is not None)


# ----------------------------------------------------------------------------------------------- weights
def engine_weight(s: StoredWeight):
    """The extension's ``Weight`` over the bytes of ``s``."""
    return extension().Weight(s.data, s.code, s.rows, s.cols)


def register_weight(t: torch.Tensor, s: StoredWeight) -> None:
    """Read ``s`` (the same float values, stored compactly) wherever the engine multiplies by ``t``."""
    t._engine_weight = engine_weight(s)


def weight_for(t: torch.Tensor):
    """The engine's ``Weight`` for the float32 matrix ``t`` (kept on ``t``): what ``register_weight`` gave, else
    ``t``'s own values (as they are at the first call: the project's weights are frozen)."""
    w = getattr(t, "_engine_weight", None)
    if w is None:
        w = t._engine_weight = engine_weight(StoredWeight("float32", t.detach().contiguous(), *t.shape))
    return w


def attach_stored(linear, s: StoredWeight) -> None:
    """The engine reads ``s`` (the same floats as ``linear.weight``, stored compactly) for ``linear``: in a stack,
    and wherever it multiplies by ``linear.weight``."""
    linear.stored_weight = s
    register_weight(linear.weight, s)


def stored_of(linear) -> StoredWeight | None:
    """The stored form attached to an ``nn.Linear`` (``attach_stored``), or None."""
    return getattr(linear, "stored_weight", None)


def _supported(layer, config) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return (getattr(config, "hidden_act", "silu") == "silu" and all(m.bias is None for m in linears)
            and all(m.weight.dtype == torch.float32 for m in linears))


def _fused_stored(mods) -> StoredWeight | None:
    parts = [stored_of(m) for m in mods]
    if any(p is None for p in parts) or len({p.fmt for p in parts}) != 1:
        return None  # not stored, or stored in several formats: the float32 values
    return concat_rows(parts)


def _fuse(layer) -> tuple[list[torch.Tensor], list]:
    """The layer's weights as the engine reads them: its two norms, and q/k/v stacked, o, gate/up stacked, down
    (each in its stored format where every part has one, else float32). The modules' own float32 weights become
    views into the stacked tensors, so no float weight is held twice."""
    cached = getattr(layer, "_engine_weights", None)  # a layer shared by two stacks is fused once
    if cached is not None:
        return cached
    attn, mlp = layer.self_attn, layer.mlp
    mats = []
    for mods in ((attn.q_proj, attn.k_proj, attn.v_proj), (attn.o_proj,), (mlp.gate_proj, mlp.up_proj),
                 (mlp.down_proj,)):
        stored = _fused_stored(mods)
        fused = torch.cat([m.weight.detach() for m in mods]).contiguous() if len(mods) > 1 else mods[0].weight.detach()
        if len(mods) > 1:
            row = 0
            for m in mods:
                rows = m.weight.shape[0]
                m.weight = torch.nn.Parameter(fused[row:row + rows], requires_grad=False)
                row += rows
        mats.append(engine_weight(stored) if stored is not None else weight_for(fused))
    norms = [layer.input_layernorm.weight.detach().contiguous(),
             layer.post_attention_layernorm.weight.detach().contiguous()]
    layer._engine_weights = (norms, mats)
    return layer._engine_weights


def stack_for(layers) -> object | None:
    """The engine's prepared copy of ``layers`` (an ``nn.ModuleList`` of Llama decoder layers), built once per
    list and kept while the list lives; None where a layer is not supported."""
    if layers in _stacks:
        return _stacks[layers]
    ext = extension()
    stack = None
    if ext is not None and len(layers) and all(_supported(l, l.self_attn.config) for l in layers):
        a = layers[0].self_attn
        cfg = a.config
        fused = [_fuse(layer) for layer in layers]
        stack = ext.Stack([n for norms, _ in fused for n in norms], [m for _, mats in fused for m in mats],
                          cfg.num_attention_heads, cfg.num_key_value_heads, a.head_dim,
                          float(layers[0].input_layernorm.variance_epsilon), float(a.scaling))
    _stacks[layers] = stack
    return stack


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return extension().linear(x, weight_for(weight))


def rmsnorm(x: torch.Tensor, norm) -> torch.Tensor:
    return extension().rmsnorm(x, norm.weight, float(norm.variance_epsilon))
