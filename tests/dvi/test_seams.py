"""The DVI seams one at a time: block -> samples, the typed Batch, the training tick, the bookkeeping, the config
built from the flags, and version-1 checkpoints (attribute-path tensor names) loading into today's head."""
import pytest
import torch

from dvi.block_samples import BlockObserver, block_samples
from dvi.checkpoint import load_ckpt, read_ckpt, save_ckpt
from dvi.config import DVIConfig, TrainerConfig
from dvi.online_loop import Bookkeeping
from dvi.training_tick import TrainingTick
from dvi.types import Batch
from evaluation import cli
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama, prompts
from tests.dvi.helpers import ring


def blocks(km, n=20):
    out = []
    kangaroo_generate(km, prompts(1)[0], n, set(), steps=4, threshold=0.0, on_block=out.append)
    return out


@pytest.fixture
def km():
    km = KangarooModel(model_id="tiny", base_model=make_tiny_llama(), exit_layer=2)
    attach_drafter_head(km, r=4, alpha=8.0)
    return km


def test_block_samples_one_per_accepted_plus_first_reject(km):
    for blk in blocks(km):
        s = block_samples(blk)
        a, m = blk.accepted, blk.drafted
        assert [x.reward for x in s] == [1] * a + [0] * (a < m)
        assert [x.pos for x in s] == list(range(1, len(s) + 1))
        assert [x.token for x in s] == blk.draft.tokens[:len(s)]
        assert all(torch.equal(x.z_phi, blk.verification.logits[i]) for i, x in enumerate(s))


def test_observer_pushes_what_block_samples_gives(km):
    buf = ring(64, 32, 97, "topk", 8)
    obs = BlockObserver(buf)
    n = sum(obs.observe(blk, i) for i, blk in enumerate(blocks(km), 1))
    assert n == buf.size > 0


def test_batch_holds_one_kind_of_verifier_logits():
    common = dict(hk=torch.zeros(2, 4), token=torch.zeros(2).long(), reward=torch.ones(2), pos=torch.ones(2).long(),
                  is_first_reject=torch.zeros(2, dtype=torch.bool))
    assert Batch(**common, z_phi=torch.zeros(2, 9)).store == "full"
    assert len(Batch(**common, z_idx=torch.zeros(2, 3).long(), z_val=torch.zeros(2, 3))) == 2
    with pytest.raises(ValueError, match="either"):
        Batch(**common)
    with pytest.raises(ValueError, match="either"):
        Batch(**common, z_phi=torch.zeros(2, 9), z_idx=torch.zeros(2, 3).long(), z_val=torch.zeros(2, 3))


def test_training_tick_inline_steps_on_cadence(km):
    cfg = DVIConfig(online=True, trainer=TrainerConfig(batch_size=2, update_every=3, kind="inline", max_ms=None))
    buf = ring(64, 32, 97, "topk", 8)
    tick = TrainingTick(km, cfg, buf)
    obs = BlockObserver(buf)
    stepped = []
    for i, blk in enumerate(blocks(km, 40), 1):
        obs.observe(blk, i)
        if tick.tick(i).steps:
            stepped.append(i)
    assert stepped and all(i % 3 == 0 for i in stepped)
    off = TrainingTick(km, DVIConfig(online=False), buf)
    assert off.tick(3).steps == [] and off.close() == []


def test_bookkeeping_save_cadence_only_online():
    on = Bookkeeping(DVIConfig(online=True, io=cli.dvi_config(cli.parse_args("kangaroo", [
        "--model-id", "x", "--device", "cpu", "--question-file", __file__, "--save-lora-every", "5"])).io), None)
    assert [s for s in range(1, 16) if on.save_due(s)] == [5, 10, 15]
    off = Bookkeeping(DVIConfig(online=False), None)
    assert not any(off.save_due(s) for s in range(1, 16))


def test_dvi_config_is_built_once_from_the_flags_and_frozen():
    cfg = cli.dvi_config(cli.parse_args("kangaroo", [
        "--model-id", "x", "--device", "cpu", "--question-file", __file__, "--dvi-online", "true",
        "--dvi-lr", "0.02", "--dvi-store", "full", "--dvi-warmup-steps", "7", "--dvi-ablation", "kd+ce",
        "--dvi-lora-r", "16", "--save-lora-path", "d", "--steps", "5"]))
    assert cfg.online and cfg.trainer.lr == 0.02 and cfg.trainer.ablation == "kd+ce"
    assert cfg.buffer.store == "full" and cfg.schedule.warmup == 7 and cfg.lora.r == 16
    assert cfg.io.save_dir == "d" and cfg.io.max_k == 5 and cfg.threaded
    with pytest.raises(AttributeError):
        cfg.online = False  # frozen
    assert cli.ABLATIONS == tuple(__import__("dvi.presets", fromlist=["PRESETS"]).PRESETS)


def test_version_1_checkpoint_with_attribute_path_names_still_loads(km, tmp_path):
    with torch.no_grad():
        km.drafter_head.proj.B.normal_()
    opt = torch.optim.AdamW(km.drafter_head.trainable_params(), lr=1e-3)
    path = tmp_path / "final.pt"
    save_ckpt(path, km, opt, None, 0.25, global_step=4)
    ck = torch.load(path, weights_only=True)
    assert sorted(ck["lora"]) == ["A", "B"] and ck["version"] == 2 and ck["meta"]["drafter"]["lora_r"] == 4
    # what the code before this version wrote: attribute paths, version 1, no drafter metadata
    ck.update(version=1, lora={f"drafter_head.proj.{k}": v for k, v in ck["lora"].items()})
    del ck["meta"]["drafter"]
    torch.save(ck, path)
    km2 = KangarooModel(model_id="tiny", base_model=make_tiny_llama(), exit_layer=2)
    attach_drafter_head(km2, r=4, alpha=8.0)
    assert not torch.equal(km2.drafter_head.proj.B, km.drafter_head.proj.B)
    assert sorted(read_ckpt(path)["lora"]) == ["A", "B"]
    load_ckpt(path, km2, None, None)
    assert torch.equal(km2.drafter_head.proj.B, km.drafter_head.proj.B)
    assert torch.equal(km2.drafter_head.proj.A, km.drafter_head.proj.A)
