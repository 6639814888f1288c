"""Turn a ``--model-id`` into a tokenizer and a frozen causal LM.

Accepted forms:
  * ``smollm2-135m``       the bundled SmolLM2-135M-Instruct (``bash scripts/setup.sh`` brings it)
  * ``path/to/model.gguf`` a GGUF file, dequantized by transformers (needs the ``gguf`` package)
  * ``path/to/folder``     a Hugging Face model folder (or a folder holding exactly one .gguf)
  * ``org/name``           a Hugging Face hub id (downloaded by transformers where a network is reachable)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from common.errors import UserError

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"
ALIASES = {"smollm2-135m": ("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSource:
    """Where to load from: ``path`` is a folder or hub id; ``gguf_file`` a file name inside ``path``."""
    name: str                      # what the user passed (kept for answer files and checkpoints)
    path: str
    gguf_file: Optional[str] = None
    blocks_gguf: Optional[str] = None  # the .gguf whose blocks the weights are (``--weights stored`` reads them)

    @property
    def checkpoint_dtype(self) -> Optional[str]:
        """The dtype a local Hugging Face folder's config.json declares (None: unknown or a .gguf)."""
        cfg = Path(self.path) / "config.json"
        if self.gguf_file or not cfg.is_file():
            return None
        d = json.loads(cfg.read_text())
        return d.get("dtype") or d.get("torch_dtype")


def resolve_model_source(model_id: str) -> ModelSource:
    if model_id in ALIASES:
        folder, gguf = ALIASES[model_id]
        if (ASSETS / folder / "config.json").exists():  # the float32 folder dequantized from the .gguf
            blocks = str(ASSETS / gguf) if (ASSETS / gguf).exists() else None
            return ModelSource(model_id, str(ASSETS / folder), blocks_gguf=blocks)
        if (ASSETS / gguf).exists():
            return ModelSource(model_id, str(ASSETS), gguf, str(ASSETS / gguf))
        raise UserError(f"the bundled model {model_id!r} is not in {ASSETS}: run `bash scripts/setup.sh` first "
                        "(or only the assets: `python -m scripts.setup.fetch_assets`)")
    p = Path(model_id).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise UserError(f"--model-id {model_id}: no such .gguf file; check the path")
        return ModelSource(model_id, str(p.parent), p.name, str(p))
    if p.is_dir():
        if (p / "config.json").exists():
            return ModelSource(model_id, str(p))
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(model_id, str(p), ggufs[0].name, str(ggufs[0]))
        raise UserError(f"--model-id {model_id}: the folder has no config.json and not exactly one .gguf file; "
                        "pass a Hugging Face model folder or the .gguf file itself")
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise UserError(f"--model-id {model_id}: no such file or folder; check the path")
    return ModelSource(model_id, model_id)  # hub id


def _from_pretrained(loader, src: ModelSource, what: str, **kw):
    extra = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        return loader.from_pretrained(src.path, **extra, **kw)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load the {what} of --model-id {src.name}: {first} "
                        "(offline? pass a local folder or .gguf file, or smollm2-135m)") from e


def load_kwargs(device, torch_dtype) -> dict:
    """from_pretrained options: on a GPU the weights go shard by shard straight to the device (device_map, low
    CPU memory), so a 7B float16 model never sits whole in host RAM; on the CPU they load in place."""
    kw = {"dtype": torch_dtype, "low_cpu_mem_usage": True}
    if torch.device(device).type == "cuda":
        kw["device_map"] = {"": str(device)}
    return kw


def load_tokenizer(model_id: str):
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, resolve_model_source(model_id), "tokenizer")


def load_causal_lm(model_id: str, device: str = "cpu", dtype: str | torch.dtype = "float32",
                   weights: Optional[str] = None):
    """The base model, frozen (requires_grad False everywhere), in eval mode on ``device``. ``weights``
    (``kangaroo/stored_weights.py``; default: the ``--weights`` of this run, else ``stored``) says which bytes the
    lean CPU engine reads for its matrices."""
    from transformers import AutoModelForCausalLM

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    src = resolve_model_source(model_id)
    model = _from_pretrained(AutoModelForCausalLM, src, "weights", **load_kwargs(device, torch_dtype))
    if getattr(model.config, "model_type", None) != "llama":
        raise UserError(f"--model-id {model_id}: model type {model.config.model_type!r} is not a Llama-family "
                        "decoder; Kangaroo-DVI supports Llama-architecture models")
    model.to(device=device, dtype=torch_dtype).eval()  # a no-op where device_map already placed it
    model.requires_grad_(False)
    from kangaroo.stored_weights import apply_weights, default_weights

    apply_weights(model, weights or default_weights(), src.blocks_gguf, src.checkpoint_dtype)
    return model
