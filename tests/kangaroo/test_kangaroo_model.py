"""KangarooModel construction: identity adapter without file access, adapter folders, the split forward."""
import builtins
import io
import os

import pytest
import torch

from kangaroo.adapter import KangarooAdapter, load_adapter, save_adapter
from common.errors import UserError
from kangaroo.drafter_head import trainable_params
from kangaroo.kangaroo_model import KangarooModel
from tests.helpers import make_tiny_llama


def test_identity_adapter_touches_no_file(tiny_llama, monkeypatch):
    def no_io(*a, **k):
        raise AssertionError(f"file access with --adapter-path none: {a[:1]}")

    for mod, name in [(builtins, "open"), (io, "open"), (os, "open"), (os, "stat"), (os, "listdir"),
                      (torch, "load")]:
        monkeypatch.setattr(mod, name, no_io)
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", no_io)
    km = KangarooModel(model_id="tiny", adapter_mode="none", adapter_path=None, exit_layer=2, base_model=tiny_llama)
    assert km.adapter is None and km.adapter_config.is_identity
    assert km.adapter_config.num_hidden_layers == 2
    assert km.adapter_config.hidden_size == tiny_llama.config.hidden_size
    # the guard is real: the same patches make a file read fail
    with pytest.raises(AssertionError):
        open(__file__)


def test_shallow_stack_is_a_frozen_copy(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    for copy_layer, base_layer in zip(km.shallow_stack, tiny_llama.model.layers[:2]):
        for (n, p), (_, q) in zip(copy_layer.named_parameters(), base_layer.named_parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr() and not p.requires_grad, n
    assert trainable_params(km) == []
    assert not any(p.requires_grad for p in km.parameters())


def test_split_forward_equals_full_model(tiny_llama):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=3)
    ids = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(0))
    caches = km.new_caches(16)
    out = km.forward_shallow(ids, caches.shallow)
    logits = km.verifier_logits(km.forward_deep(out.h, caches.deep))
    torch.testing.assert_close(logits, tiny_llama(ids).logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.hk, km.norm(out.h))  # identity adapter: hk = final_norm(h_k)


@pytest.mark.parametrize("k", [0, 4, -1])
def test_exit_layer_out_of_range(tiny_llama, k):
    with pytest.raises(UserError, match="--exitlayer"):
        KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=k)


def test_adapter_folder_round_trip(tiny_llama, tmp_path):
    torch.manual_seed(1)
    adapter = KangarooAdapter(tiny_llama.config)
    save_adapter(adapter, tmp_path / "ad")
    km = KangarooModel(model_id="tiny", adapter_mode="load", adapter_path=str(tmp_path / "ad"), exit_layer=2,
                       base_model=tiny_llama)
    for k, v in adapter.state_dict().items():
        torch.testing.assert_close(km.adapter.state_dict()[k], v.to(torch.float64))
    caches = km.new_caches(8)
    assert caches.shallow.num_layers == 3  # two shallow layers + the adapter's own
    out = km.forward_shallow(torch.tensor([[4, 5, 6]]), caches.shallow)
    assert not torch.allclose(out.hk, km.norm(out.h))


def test_adapter_errors(tiny_llama, tmp_path):
    with pytest.raises(UserError, match="expected config.json"):
        load_adapter(tmp_path / "missing", tiny_llama.config)
    other = make_tiny_llama(hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    save_adapter(KangarooAdapter(other.config), tmp_path / "other")
    with pytest.raises(UserError, match="another model"):
        load_adapter(tmp_path / "other", tiny_llama.config)
    save_adapter(KangarooAdapter(tiny_llama.config), tmp_path / "bad")
    (tmp_path / "bad" / "adapter.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="damaged"):
        load_adapter(tmp_path / "bad", tiny_llama.config)
