"""The bundled model's logits on the engine equal, bit for bit, those the engine computed before it read weights
as stored (recorded in engine_float32_golden.json with the float32 kernel of main at 224d4ed): with
``--weights float32`` and with the GGUF's Q4_1/Q8_0 blocks (``stored``, the default), at 1 and 2 threads.
One-token steps after a prefill, verify blocks of 2, 7 and 16 rows, and 24 greedy tokens."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.greedy import greedy_decode
from kangaroo.llama_forward import final_norm, new_cache, project, run_layers
from kangaroo.stored_weights import matrices

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")
GOLDEN = json.loads((Path(__file__).parent / "engine_float32_golden.json").read_text())


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def logits_digests(lm, ids):
    body = lm.model
    cache = new_cache(lm.config, len(body.layers), 128, torch.float32, "cpu")
    run_layers(body.layers, body.embed_tokens(ids[:, :-1]), cache, body.rotary_emb)
    prefix, x, steps, blocks = cache.length, ids[:, -1:], [], []
    for _ in range(len(GOLDEN["steps"])):
        h = run_layers(body.layers, body.embed_tokens(x), cache, body.rotary_emb)
        logits = project(final_norm(body.norm, h[:, -1]), lm.lm_head.weight)
        steps.append(digest(logits))
        x = logits.argmax(-1, keepdim=True)
    for n in (2, 7, 16):
        cache.crop(prefix)
        h = run_layers(body.layers, body.embed_tokens(torch.cat([ids[:, -1:], ids[:, 1:n]], 1)), cache, body.rotary_emb)
        blocks.append(digest(project(final_norm(body.norm, h), lm.lm_head.weight)))
    return steps, blocks


@pytest.mark.parametrize("weights", ["stored", "float32"])
def test_logits_equal_the_previous_float32_engine(weights, real_tokenizer):
    from kangaroo.model_loading import load_causal_lm

    lm = load_causal_lm("smollm2-135m", weights=weights)
    fmts = {getattr(m, "stored_weight", None) and m.stored_weight.fmt for m in matrices(lm).values()}
    assert fmts == ({"q4_1", "q8_0"} if weights == "stored" else {None})
    ids = real_tokenizer(GOLDEN["prompt"], return_tensors="pt").input_ids
    for threads in (1, 2):
        torch.set_num_threads(threads)
        assert logits_digests(lm, ids) == (GOLDEN["steps"], GOLDEN["blocks"])
        assert greedy_decode(lm, ids, len(GOLDEN["greedy"]), set()).tokens == GOLDEN["greedy"]
    torch.set_num_threads(1)
