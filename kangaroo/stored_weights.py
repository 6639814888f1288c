"""Which bytes the lean CPU engine reads for a loaded model's matrices (``--weights``).

    stored    as the file holds them: a .gguf's blocks (the bundled model: the Q4_1/Q8_0 file its float32
              folder was dequantized from), a bfloat16/float16 checkpoint's 16-bit weights; else float32
    float32   the float32 weights the model holds (the plain path's own tensors)
    bfloat16, float16, q8_0, q4_0, q4_1
              convert: round/quantize every matrix and give the model the resulting float values, so the
              model changes (every method of a run shares it: a way to compare formats on one model)

A stored form is attached only where its float32 values equal the model's weights bit for bit (checked here
with the engine's own expansion), so the engine computes exactly what the plain path computes; anything else
keeps float32, with a one-line notice. The decoder layers' matrices and the vocabulary head are covered (the
embedding lookup reads the float32 table: one row a token).
"""
from __future__ import annotations

import sys

import torch

from kangaroo import cpu_engine
from kangaroo.weight_formats import (
    FLOAT_DTYPES,
    FORMATS,
    StoredWeight,
    dequantize,
    quantize,
)

WEIGHTS = ("stored", "float32") + FORMATS[1:]
_default = {"weights": "stored"}


def set_default_weights(weights: str) -> None:
    """The ``--weights`` every later ``model_loading.load_causal_lm`` applies (as ``--engine`` sets the engine)."""
    if weights not in WEIGHTS:
        raise ValueError(f"--weights {weights!r}: use one of {', '.join(WEIGHTS)}")
    _default["weights"] = weights


def default_weights() -> str:
    return _default["weights"]


def matrices(lm) -> dict[str, torch.nn.Linear]:
    """The model's matrices the engine multiplies by, by module name: every decoder Linear and the head."""
    out = {name: m for name, m in lm.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name}
    out["lm_head"] = lm.lm_head
    return out


def exact(stored: StoredWeight, weight: torch.Tensor) -> bool:
    """Whether the engine's float32 expansion of ``stored`` is ``weight``, bit for bit."""
    if tuple(weight.shape) != (stored.rows, stored.cols) or weight.dtype != torch.float32:
        return False
    values = cpu_engine.extension().dequantize(cpu_engine.engine_weight(stored))
    return torch.equal(values.view(torch.int32), weight.detach().contiguous().view(torch.int32))


def attach_exact(lm, stored: dict[str, StoredWeight], source: str) -> int:
    """Attach each ``stored[name]`` whose values equal the model's weight; notice the rest. Returns how many."""
    mods, kept, differ = matrices(lm), 0, []
    for name, s in stored.items():
        if name in mods:
            if exact(s, mods[name].weight):
                cpu_engine.attach_stored(mods[name], s)
                kept += 1
            else:
                differ.append(name)
    if differ:
        _notice(f"{len(differ)} matrices of {source} do not equal the loaded weights bit for bit (e.g. {differ[0]}): "
                "the engine reads float32 for those")
    return kept


def sixteen_bit(lm, fmt: str) -> dict[str, StoredWeight]:
    """The 16-bit copies of the matrices whose float32 values a ``fmt`` checkpoint held exactly."""
    out = {}
    for name, m in matrices(lm).items():
        w = m.weight.detach()
        half = w.to(FLOAT_DTYPES[fmt])
        if torch.equal(half.float().view(torch.int32), w.contiguous().view(torch.int32)):
            out[name] = StoredWeight(fmt, half.contiguous(), *w.shape)
    return out


@torch.no_grad()
def convert(lm, fmt: str) -> int:
    """Round/quantize every matrix to ``fmt``, give the model those float values, attach the stored form.
    Matrices the format cannot hold (block formats: columns not a multiple of 32) stay as they are."""
    done, left = 0, []
    for name, m in matrices(lm).items():
        try:
            s = quantize(m.weight, fmt)
        except ValueError:
            left.append(name)
            continue
        m.weight.copy_(dequantize(s))
        cpu_engine.attach_stored(m, s)
        done += 1
    if left:
        _notice(f"--weights {fmt}: {len(left)} matrices (e.g. {left[0]}) do not fit its blocks of 32; they stay "
                "float32")
    return done


def apply_weights(lm, weights: str, gguf_path: str | None = None, checkpoint_dtype: str | None = None) -> int:
    """Apply ``--weights`` to ``lm`` (CPU, float32) loaded from a source with ``gguf_path`` (the .gguf its
    weights come from, if any) and ``checkpoint_dtype`` (its config's dtype). Returns the matrices attached."""
    if weights not in WEIGHTS:
        raise ValueError(f"--weights {weights!r}: use one of {', '.join(WEIGHTS)}")
    if weights == "float32" or cpu_engine.extension() is None or lm.dtype != torch.float32 \
            or lm.device.type != "cpu":
        return 0
    if weights != "stored":
        return convert(lm, weights)
    if gguf_path is not None:
        from kangaroo.gguf_blocks import read_blocks

        blocks, skipped = read_blocks(gguf_path, lm.config)
        if skipped:
            _notice(f"{len(skipped)} tensors of {gguf_path} are in types the engine does not read (e.g. "
                    f"{skipped[0]}): float32 for those")
        return attach_exact(lm, {n: s for n, s in blocks.items() if s.fmt != "float32"}, gguf_path)
    if checkpoint_dtype in ("bfloat16", "float16"):
        return attach_exact(lm, sixteen_bit(lm, checkpoint_dtype), f"the {checkpoint_dtype} checkpoint")
    return 0


def _notice(msg: str) -> None:
    print(f"[weights] {msg}", file=sys.stderr, flush=True)
