"""The block cost model (pure), one profiler run on a tiny random Llama, and the profiler's modes."""
from __future__ import annotations

import json
import re

import pytest
import torch

from scripts.profile.cost_model import block_ms, break_even
from scripts.profile.block import main

COSTS = {"ar_ms": 10.0, "shallow_ms": 1.0, "head_identity_ms": 0.5, "head_lora_ms": 1.0,
         "deep_ms": {1: 9.0, 2: 12.0, 3: 14.0}, "train_ms": 80.0}


def test_block_cost_adds_the_parts():
    # m = 2 drafts: 3 shallow passes, 2 head calls, one deep pass over 3 tokens
    assert block_ms(COSTS, 2, "identity") == pytest.approx(3 * 1.0 + 2 * 0.5 + 14.0)
    assert block_ms(COSTS, 2, "lora") == pytest.approx(3 * 1.0 + 2 * 1.0 + 14.0)
    assert block_ms(COSTS, 1, "lora", online=True, update_every=8) == pytest.approx(2 + 1 + 12 + 10)


def test_break_even_is_block_cost_over_one_plain_step():
    assert break_even(COSTS, 1, "identity") == pytest.approx((2 * 1.0 + 0.5 + 12.0) / 10.0)
    assert break_even(COSTS, 2, "lora", online=True, update_every=4) > break_even(COSTS, 2, "lora")


def test_profiler_writes_costs_for_every_verify_width(tmp_path):
    from tests.helpers import make_tiny_llama

    model_dir = tmp_path / "tiny"
    make_tiny_llama(dtype=torch.float32).save_pretrained(model_dir)
    out = tmp_path / "prof"
    assert main(["--model-id", str(model_dir), "--context", "8", "--repeats", "1", "--steps", "3",
                 "--dvi-topk", "16", "--dvi-batch-size", "8", "--stream-mb", "4", "--threads", "1,2",
                 "--weights-list", "stored,q8_0",
                 "--drafter-vocabs", "0,16,4096", "--draft-adapter", "train", "--batch-sizes", "1,3",
                 "--out", str(out)]) == 0
    costs = json.loads((out / "block_costs.json").read_text())["costs"]
    assert sorted(int(n) for n in costs["deep_ms"]) == [1, 2, 3, 4]
    assert all(costs[k] > 0 for k in ("ar_ms", "shallow_ms", "head_identity_ms", "head_lora_ms", "train_ms",
                                      "stream_limit_ms"))
    assert sorted(costs["variants"]) == ["q8_0/auto/1t", "q8_0/auto/2t", "stored/auto/1t", "stored/auto/2t",
                                         "stored/plain/1t", "stored/plain/2t"]
    q8, f32 = costs["variants"]["q8_0/auto/1t"], costs["variants"]["stored/auto/1t"]
    assert q8["stream_limit_ms"] < f32["stream_limit_ms"] / 3  # 34 bytes a block of 32 weights against 128
    assert q8["fma_floor_ms"] == f32["fma_floor_ms"] and f32["fma_floor_ms"]["4"] > f32["fma_floor_ms"]["1"]
    assert all(sorted(int(n) for n in v["deep_ms"]) == [1, 2, 3, 4] for v in costs["variants"].values())
    md = (out / "block_costs.md").read_text()
    assert "| 3 |" in md and "deep(2) / ar" in md and "| stored/plain/2t |" in md and "q8_0 x" in md
    # one self-drafted token per drafter vocabulary (the tiny model's 97 tokens stand for "full") and precision
    assert [(r["vocab"], r["precision"]) for r in costs["draft"]] == [
        (v, p) for v in (97, 16) for p in ("float32", "bf16", "int8")]
    assert all(r["token_ms"] > 0 and r["head_ms"] > 0 for r in costs["draft"])
    assert "share of a greedy step" in md
    # one greedy step of 1 and of 3 sequences at once (the server's batched calls), and the ceiling it sets
    assert sorted(costs["batch_ms"]) == ["1", "3"] and all(ms > 0 for ms in costs["batch_ms"].values())
    assert "ceiling c x t(1) / t(c)" in md and "| 1.00x |" in md
    assert re.search(r"\| 3 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+x \|", md)


def test_the_profiler_names_its_modes_and_hands_a_mode_the_rest(capsys):
    from scripts.profile.__main__ import MODES, main as profile

    assert list(MODES) == ["block", "shape", "overhead", "matmul", "engine"]
    for argv in ([], ["blocks"]):
        with pytest.raises(SystemExit) as e:
            profile(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "python -m scripts.profile {block,shape," in err[0]
    with pytest.raises(SystemExit) as e:  # the block mode's own check of its flags
        profile(["block", "--batch-sizes", "1,zero", "--out", "unused"])
    assert e.value.code == 2 and "--batch-sizes" in capsys.readouterr().err
