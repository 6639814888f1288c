"""--adapter-mode load reads the Kangaroo repo's released adapter layout as well as ours."""
import json

import pytest
import torch

from kangaroo.adapter import KangarooAdapter, load_adapter, save_adapter
from common.errors import UserError
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama, tiny_config


def random_adapter(lm, seed=5):
    torch.manual_seed(seed)
    a = KangarooAdapter(lm.config).to(lm.dtype)
    for p in a.parameters():
        p.data.normal_(0, 0.2)
    return a


def save_kangaroo_repo_layout(adapter, lm, folder, **cfg_overrides):
    """What the Kangaroo repo ships: a 1-layer LlamaConfig and pytorch_model.bin with layers.0.* names."""
    cfg = tiny_config(layers=1, **cfg_overrides)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.to_json_file(str(folder / "config.json"))
    sd = adapter.state_dict()
    state = {("norm.weight" if k == "norm.weight" else f"layers.0.{k}"): v.clone() for k, v in sd.items()}
    state["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # old checkpoints carry this buffer
    torch.save(state, folder / "pytorch_model.bin")
    return state


def test_kangaroo_repo_layout_loads_and_decodes_losslessly(tmp_path):
    lm = make_tiny_llama()
    adapter = random_adapter(lm)
    state = save_kangaroo_repo_layout(adapter, lm, tmp_path / "released")
    assert sorted(k for k in state if "rotary" not in k) == [
        "layers.0.input_layernorm.weight", "layers.0.self_attn.k_proj.weight", "layers.0.self_attn.o_proj.weight",
        "layers.0.self_attn.q_proj.weight", "layers.0.self_attn.v_proj.weight", "norm.weight"]
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode="load",
                       adapter_path=str(tmp_path / "released"))
    for k, v in adapter.state_dict().items():
        assert torch.equal(km.adapter.state_dict()[k], v.float().to(v.dtype)), k  # read in float32, as ours
    ids = torch.randint(3, 97, (1, 7), generator=torch.Generator().manual_seed(3))
    res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0)
    assert res.tokens == greedy_decode(lm, ids, 30, set()).tokens
    identity = kangaroo_generate(KangarooModel(model_id="tiny", base_model=lm, exit_layer=2), ids, 30, set(),
                                 steps=4, threshold=0.0)
    assert res.accept_lengths != identity.accept_lengths  # the adapter really drafts


def test_our_layout_still_loads(tmp_path):
    lm = make_tiny_llama()
    adapter = random_adapter(lm)
    save_adapter(adapter, tmp_path / "ours")
    loaded = load_adapter(tmp_path / "ours", lm.config)
    assert all(torch.equal(loaded.state_dict()[k], v.float()) for k, v in adapter.state_dict().items())


@pytest.mark.parametrize("damage,match", [
    ("hidden", "made for another model: hidden_size=64"),
    ("bin", "pytorch_model.bin is damaged"),
    ("layers", "num_hidden_layers 2"),
    ("missing_key", "missing"),
    ("empty", "expected config.json with adapter.safetensors"),
])
def test_bad_released_adapter_is_one_clear_error(tmp_path, damage, match):
    lm = make_tiny_llama()
    folder = tmp_path / "released"
    if damage == "hidden":
        save_kangaroo_repo_layout(random_adapter(lm), lm, folder, hidden_size=64)
    else:
        save_kangaroo_repo_layout(random_adapter(lm), lm, folder)
    if damage == "bin":
        (folder / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    elif damage == "layers":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    elif damage == "missing_key":
        sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
        del sd["norm.weight"]
        torch.save(sd, folder / "pytorch_model.bin")
    elif damage == "empty":
        (folder / "pytorch_model.bin").unlink()
    with pytest.raises(UserError, match=match) as e:
        load_adapter(folder, lm.config)
    assert "\n" not in str(e.value)
