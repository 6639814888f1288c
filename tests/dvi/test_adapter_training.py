"""DVI with a trained adapter (--adapter-mode train): segments in the buffer, the trainer step (adapter + LoRA,
never the model), the shadow's publish/apply, checkpoints (round trip, deploy, the adapter folder, mismatches)."""
import pytest
import torch

from dvi.background_trainer import copy_tensors
from dvi.checkpoint import CheckpointError
from dvi.online_loop import DVILearner
from dvi.segment_features import segment_features
from dvi.types import DVITrainSample
from kangaroo.drafter_head import attach_drafter_head, trainable_params
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama, prompts
from tests.dvi.helpers import ring
from tests.dvi.test_online_loop import dvi_args
from tests.kangaroo.test_trained_adapter import agreeable_llama, committed_inputs, perturb

NO_STEPS = ("--dvi-batch-size", "256", "--dvi-buffer-size", "256")  # a batch never fills: no trainer step


def model(lm=None, window=4, mode="train"):
    lm = lm or make_tiny_llama()
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode=mode, adapter_window=window)
    attach_drafter_head(km, r=4, alpha=8.0)
    return lm, km


def learner(km, tmp_path, *extra, window=4):
    return DVILearner(km, dvi_args(tmp_path, "--dvi-adapter-window", str(window), *extra), print_fn=lambda *_: None)


def decode(km, lm, dvi, ids_list, n=30):
    """Lossless while it learns: every output is greedy's."""
    for ids in ids_list:
        res = kangaroo_generate(km, ids, n, set(), steps=4, threshold=0.0, on_block=dvi.on_block,
                                on_prefill=dvi.on_prefill, prefill_positions=dvi.prefill_positions)
        assert res.tokens == greedy_decode(lm, ids, n, set()).tokens
        yield res


def tensors(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("window", [4, 64])  # 64: longer than every sequence here, so every segment is short
def test_segments_are_the_committed_rows_ending_at_each_tuples_input(tmp_path, window):
    lm, km = model(agreeable_llama(), window=window)
    perturb(km.trained_adapter, scale=0.1)  # accepted and rejected drafts: rolled-back rows must not reach a segment
    dvi = learner(km, tmp_path, "--dvi-online", "true", "--dvi-dense", "true", "--dvi-prefill-positions", "3",
                  *NO_STEPS, window=window)
    ids, blocks = prompts(1)[0], []
    dvi.on_block = lambda blk, push=dvi.on_block: (blocks.append(blk), push(blk))
    list(decode(km, lm, dvi, [ids]))
    assert any(0 < b.accepted < b.drafted for b in blocks) and any(b.accepted == b.drafted for b in blocks)
    assert dvi.train_steps == 0 and dvi.buffer.segment_window == window
    seq = committed_inputs(ids, blocks)
    fresh = km.new_caches(64).shallow
    km.forward_shallow(seq, fresh)
    rows = fresh.rows[0].half()
    b = dvi.buffer.sample(dvi.buffer.size)
    W = b.seg_h.shape[1]
    last = b.seg_pos + b.seg_len - 1  # the tuple's input position
    assert W == window and torch.equal(b.seg_len, torch.clamp(last + 1, max=W))
    assert bool((b.seg_len < W).any()) and (window == 64 or bool((b.seg_len == W).any()))
    assert set(last.tolist()) >= {0, ids.shape[1] - 2}  # prefill positions (first and last) and the blocks'
    for i in range(len(b)):
        n, p0 = int(b.seg_len[i]), int(b.seg_pos[i])
        assert not b.seg_h[i, :W - n].any()  # padding
        assert torch.equal(b.seg_h[i, W - n:], rows[p0:p0 + n])
    # the last row is the input whose hk drafted the tuple: the adapter over the segment gives the stored hk back;
    # the KD-only tuples (dense rows, prefill) store no hk (zeros): the adapter never ran for them at decode time
    drafted = ~b.kd_only.bool()
    assert bool(drafted.any()) and bool(b.kd_only.bool().any()) and not b.hk[~drafted].any()
    torch.testing.assert_close(segment_features(km.trained_adapter, km.rotary_emb, b)[drafted],
                               b.hk[drafted].double(), rtol=2e-2, atol=2e-2)


def test_trainer_step_trains_the_adapter_and_lora_and_nothing_else(tmp_path):
    lm, km = model()
    frozen = {**{f"lm.{k}": v for k, v in tensors(lm).items()}, "head": km.drafter_head.proj.base.weight.clone(),
              **{f"shallow.{k}": v for k, v in tensors(km.shallow_stack).items()}}
    adapter0, B0 = tensors(km.trained_adapter), km.drafter_head.proj.B.clone()
    dvi = learner(km, tmp_path, "--dvi-online", "true", "--dvi-lr", "0.01")
    assert len(dvi.trainer.params) == 2 + len(adapter0)  # one optimizer: A, B and every adapter tensor
    list(decode(km, lm, dvi, prompts(2)))
    assert dvi.train_steps > 5
    after = {**{f"lm.{k}": v for k, v in tensors(lm).items()}, "head": km.drafter_head.proj.base.weight,
             **{f"shallow.{k}": v for k, v in tensors(km.shallow_stack).items()}}
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert all(not torch.equal(v, adapter0[k]) for k, v in tensors(km.trained_adapter).items()), "every tensor moves"
    assert not torch.equal(km.drafter_head.proj.B, B0)


def test_trainer_refuses_a_batch_without_segments(tmp_path):
    _, km = model()
    dvi = learner(km, tmp_path, "--dvi-online", "true")
    plain = ring(8, 32, 97, "topk", 16)
    for _ in range(4):
        plain.push(DVITrainSample(torch.zeros(32), 3, torch.randn(97), 1, 1, False))
    with pytest.raises(ValueError, match="no segments"):
        dvi.trainer.step(plain.sample(4), 1)


def test_thread_trainer_publishes_the_adapter_at_block_boundaries(tmp_path):
    lm, km = model()
    start = tensors(km.trained_adapter)
    dvi = learner(km, tmp_path, "--dvi-online", "true", "--dvi-trainer", "thread")
    shadow = dvi.shadow.trained_adapter
    assert shadow is not km.trained_adapter and dvi.trainer.part.adapter is shadow
    assert shadow.self_attn.q_proj.weight.data_ptr() != km.trained_adapter.self_attn.q_proj.weight.data_ptr()
    list(decode(km, lm, dvi, prompts(3)))
    dvi.bg.close(drain=True)
    summary = dvi.finish()
    assert summary["trainer"] == "thread" and summary["train_steps"] >= 1
    live = tensors(km.trained_adapter)
    assert all(torch.equal(v, shadow.state_dict()[k]) for k, v in live.items())  # the last published weights
    assert any(not torch.equal(v, start[k]) for k, v in live.items())


def test_publish_copies_shadow_adapter_into_the_live_one(tmp_path):
    _, km = model()
    dvi = learner(km, tmp_path, "--dvi-online", "true", "--dvi-trainer", "thread")
    with torch.no_grad():
        dvi.shadow.trained_adapter.self_attn.o_proj.weight.fill_(0.5)  # as a trainer step would
    assert not km.trained_adapter.self_attn.o_proj.weight.any()
    bg = dvi.bg
    with bg._pub_lock:  # what the trainer thread does after a step
        copy_tensors(bg._staged, trainable_params(dvi.shadow))
        bg.version += 1
    assert not km.trained_adapter.self_attn.o_proj.weight.any()  # nothing changes before a block boundary
    assert bg.apply_published()
    assert bool((km.trained_adapter.self_attn.o_proj.weight == 0.5).all())
    dvi.finish()


def train_and_save(tmp_path, window=4):
    lm, km = model(window=window)
    dvi = learner(km, tmp_path, "--dvi-online", "true", window=window)
    list(decode(km, lm, dvi, prompts(2)))
    summary = dvi.finish()
    return lm, km, dvi, summary


def test_checkpoint_round_trip_resume_and_deploy(tmp_path):
    lm, km, dvi, summary = train_and_save(tmp_path)
    ck = tmp_path / "ckpt" / "final.pt"
    assert summary["final"] == str(ck) and summary["adapter"] == str(tmp_path / "ckpt" / "adapter")
    trained = tensors(km.trained_adapter)
    _, km2 = model(lm)
    resumed = learner(km2, tmp_path, "--dvi-online", "true", "--load-lora", str(ck))
    assert all(torch.equal(v, trained[k]) for k, v in tensors(km2.trained_adapter).items())
    assert resumed.global_step == dvi.global_step
    state = resumed.trainer.optimizer.state_dict()["state"]
    assert len(state) == len(resumed.trainer.params) == 2 + len(trained)  # adapter moments restored too
    mine = dvi.trainer.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], mine[i]["exp_avg"]) for i in state)
    resumed.finish()
    accepts = []
    for _ in range(2):  # deployed: the same drafter, lossless, deterministic
        _, kmd = model(lm)
        dep = learner(kmd, tmp_path, "--dvi-online", "false", "--load-lora", str(ck))
        assert all(torch.equal(v, trained[k]) for k, v in tensors(kmd.trained_adapter).items())
        accepts.append([r.accept_lengths for r in decode(kmd, lm, dep, prompts(2))])
        assert dep.train_steps == 0 and all(torch.equal(v, trained[k]) for k, v in tensors(kmd.trained_adapter).items())
    assert accepts[0] == accepts[1]
    folder = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode="load",
                           adapter_path=summary["adapter"])
    assert folder.adapter.window == 4
    for k, v in tensors(folder.adapter).items():
        torch.testing.assert_close(v, trained[k], rtol=1e-6, atol=1e-7)  # the folder holds float32


@pytest.mark.parametrize("saved,run,match", [
    ("lora", "train", "trained without an adapter (LoRA head only) but this run trains one"),
    ("adapter", "none", "holds a trained adapter (window 4) but this run drafts without it: pass --adapter-mode train"),
    ("adapter", "window 6", "trained with --dvi-adapter-window 4, this run has 6: pass --dvi-adapter-window 4"),
])
def test_mismatched_checkpoint_is_one_line_naming_the_fix(tmp_path, saved, run, match):
    if saved == "lora":
        lm, km = model(mode="none")
        dvi = DVILearner(km, dvi_args(tmp_path, "--dvi-online", "true"), print_fn=lambda *_: None)
        list(decode(km, lm, dvi, prompts(1)))
        dvi.finish()
    else:
        lm, *_ = train_and_save(tmp_path)
    ck = tmp_path / "ckpt" / "final.pt"
    before = ck.read_bytes()
    _, km2 = model(lm, window=6 if run == "window 6" else 4, mode="none" if run == "none" else "train")
    B = km2.drafter_head.proj.B.clone()
    for online in ("true", "false"):
        with pytest.raises(CheckpointError) as e:
            learner(km2, tmp_path, "--dvi-online", online, "--load-lora", str(ck))
        assert match in str(e.value) and "\n" not in str(e.value)
    assert ck.read_bytes() == before and torch.equal(km2.drafter_head.proj.B, B)  # nothing loaded
