"""Which bytes the engine reads (``--weights``): a stored form only where its floats equal the model's weights bit
for bit (else float32, with one line that says so); a 16-bit checkpoint keeps its 16-bit weights; a conversion
changes the model for every path alike; the GGUF rows un-permuted as transformers does."""
import numpy as np
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.gguf_blocks import module_name, unpermute_rows
from kangaroo.greedy import greedy_decode
from kangaroo.stored_weights import apply_weights, attach_exact, convert, matrices
from kangaroo.weight_formats import quantize
from tests.helpers import make_tiny_llama

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")


def formats_read(lm) -> set:
    return {getattr(cpu_engine.stored_of(m), "fmt", "float32") for m in matrices(lm).values()}


def test_a_16_bit_checkpoint_keeps_its_16_bit_weights(tmp_path):
    from kangaroo.model_loading import load_causal_lm

    make_tiny_llama(seed=1, dtype=torch.bfloat16).save_pretrained(tmp_path)
    lm = load_causal_lm(str(tmp_path))  # float32 activations, the bfloat16 values
    assert lm.dtype == torch.float32 and formats_read(lm) == {"bfloat16"}
    lm32 = load_causal_lm(str(tmp_path), weights="float32")
    assert formats_read(lm32) == {"float32"}
    ids = torch.randint(3, 97, (1, 7), generator=torch.Generator().manual_seed(0))
    hf = lm32.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[0, 7:].tolist()
    assert greedy_decode(lm, ids, 16, set()).tokens == greedy_decode(lm32, ids, 16, set()).tokens == hf


def test_a_stored_form_with_other_floats_is_declined_with_one_line(capsys):
    lm = make_tiny_llama(dtype=torch.float32, hidden_size=64, intermediate_size=96)
    mods = matrices(lm)
    good = quantize(mods["model.layers.0.mlp.up_proj"].weight, "float16")
    with torch.no_grad():
        mods["model.layers.0.mlp.up_proj"].weight.copy_(good.data.float())  # now exactly its float16 values
    bad = quantize(mods["model.layers.1.mlp.up_proj"].weight, "q8_0")    # lossy: not the model's floats
    assert attach_exact(lm, {"model.layers.0.mlp.up_proj": good, "model.layers.1.mlp.up_proj": bad}, "test") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not equal the loaded weights" in err[0] and "layers.1.mlp.up_proj" in err[0]
    assert cpu_engine.stored_of(mods["model.layers.1.mlp.up_proj"]) is None


def test_a_conversion_keeps_float32_where_blocks_do_not_fit(capsys):
    lm = make_tiny_llama(dtype=torch.float32, hidden_size=48, num_attention_heads=4)  # 48 columns: no blocks of 32
    ref = make_tiny_llama(dtype=torch.float32, hidden_size=48, num_attention_heads=4)
    done = convert(lm, "q4_0")
    assert 0 < done < len(matrices(lm)) and "do not fit its blocks of 32" in capsys.readouterr().err
    changed = [n for n, m in matrices(lm).items() if not torch.equal(m.weight, matrices(ref)[n].weight)]
    assert len(changed) == done  # the model changed exactly where it is read as blocks
    with pytest.raises(ValueError, match="--weights"):
        apply_weights(lm, "q5_k")


def test_gguf_rows_are_unpermuted_as_transformers_does():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    for heads, kv in ((4, 4), (4, 2)):
        ref = LlamaTensorProcessor()._reverse_permute_weights(w, heads, kv)
        assert np.array_equal(w[unpermute_rows(24, kv).numpy()], ref)
    assert module_name("blk.3.attn_k.weight") == "model.layers.3.self_attn.k_proj"
    assert module_name("token_embd.weight") == "model.embed_tokens" and module_name("blk.0.attn_norm.weight") is None
