"""The sidecar loop on a tiny model: a traced block gives the training tuples of the live one; traces in, versioned
drafter checkpoints out, the drafter side adopts each new version at a block boundary, and every output stays
greedy."""
import pytest
import torch

from dvi.block_samples import block_samples
from dvi.config import BufferConfig, DVIConfig, LoRAConfig, TrainerConfig
from dvi.drafter_versions import latest_version
from dvi.hot_swap import HotSwap
from dvi.sidecar import Sidecar
from dvi.traces import TraceWriter, block_of, read_shard, shard_numbers
from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.drafters import DrafterChain, NGramDrafter, SelfDrafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.sampling import GREEDY, SamplingParams
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama
from tests.dvi.test_online_loop import prompts

V, K = 97, 16


def drafter_model(lm, window=4):
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode="train", adapter_window=window)
    attach_drafter_head(km, r=4, alpha=8.0)
    return km


def same_samples(a, b):
    """Equal training tuples; the verifier's logits compared on the top-K the buffer keeps."""
    assert len(a) == len(b) and a
    for s, t in zip(a, b):
        assert (s.token, s.reward, s.pos, s.is_first_reject, s.kd_only, s.seg_pos) == (
            t.token, t.reward, t.pos, t.is_first_reject, t.kd_only, t.seg_pos)
        assert torch.equal(s.hk.to(torch.float16), t.hk.to(torch.float16))
        assert torch.equal(s.seg_h.to(torch.float16), t.seg_h.to(torch.float16))
        assert top_k(s.z_phi) == top_k(t.z_phi)


def top_k(z):
    """The top-K (id, float16 logit) pairs a top-K buffer stores (as a set: ties after rounding may swap order)."""
    top = torch.topk(z.float(), K)
    return set(zip(top.indices.tolist(), top.values.to(torch.float16).tolist()))


@pytest.mark.parametrize("sampling", [GREEDY, SamplingParams(1.2, top_p=0.95, seed=3)], ids=["greedy", "sampled"])
def test_a_traced_block_gives_the_tuples_of_the_live_block(tmp_path, sampling):
    lm = make_tiny_llama()
    km = drafter_model(lm)
    writer, live = TraceWriter(tmp_path / "t", topk=K, per_shard=5), []
    drafter = DrafterChain([NGramDrafter(3), SelfDrafter(3, ThresholdStop(0.3))])  # self and n-gram blocks
    for ids in prompts(2):
        kangaroo_generate(km, torch.cat([ids, ids], 1), 20, set(), drafter=drafter, sampling=sampling,
                          on_block=lambda b: (live.append(b), writer.on_block(b)))
    writer.flush()
    recs = [r for n in shard_numbers(tmp_path / "t") for r in read_shard(tmp_path / "t", n)]
    assert len(recs) == len(live) and len(shard_numbers(tmp_path / "t")) == -(-len(live) // 5)
    assert {b.draft.source for b in live} == {"self", "ngram"}
    for b, r in zip(live, recs):
        same_samples(block_samples(b, dense=True), block_samples(block_of(r, V), dense=True))
    assert not list((tmp_path / "t").glob(".*"))  # no temp file left behind


def sidecar_cfg():
    return DVIConfig(online=True, lora=LoRAConfig(r=4, alpha=8.0), buffer=BufferConfig(capacity=64, topk=K),
                     trainer=TrainerConfig(lr=0.05, batch_size=4, update_every=1, kind="inline", max_ms=None))


def test_sidecar_loop_traces_in_versions_out_hot_swapped_at_block_boundaries(tmp_path):
    lm = make_tiny_llama()
    live, trainer_side = drafter_model(lm), drafter_model(lm)  # the decode side's drafter and the sidecar's copy
    traces, versions = tmp_path / "traces", tmp_path / "versions"
    writer, swap = TraceWriter(traces, topk=K, per_shard=4), HotSwap(live, versions)
    sidecar = Sidecar(trainer_side, sidecar_cfg(), traces, versions, print_fn=lambda *_: None)
    drafter = SelfDrafter(4, ThresholdStop(0.0))

    def hooks(blk):
        writer.on_block(blk)
        swap.on_block(blk)
        sidecar.poll()  # in a deployment its own process; here between blocks, so the test is deterministic

    for ids in prompts(3):
        out = kangaroo_generate(live, ids, 24, set(), drafter=drafter, on_block=hooks)
        assert out.tokens == greedy_decode(lm, ids, 24, set()).tokens
    assert sidecar.version >= 2 and latest_version(versions)[0] == sidecar.version
    assert len(swap.swaps) >= 2 and [v for _, v in swap.swaps] == sorted({v for _, v in swap.swaps})
    assert swap.swaps[0][0] < swap.blocks  # adopted mid-run, at a block boundary
    sidecar.poll()  # whatever the last shard held
    swap.on_block()
    assert swap.version == sidecar.version
    for a, b in zip(live.drafter_head.trainable_params() + list(live.trained_adapter.parameters()),
                    trainer_side.drafter_head.trainable_params() + list(trainer_side.trained_adapter.parameters())):
        assert torch.equal(a, b)  # the live drafter is the sidecar's newest
    assert live.drafter_head.proj.B.abs().sum() > 0

    # a restarted sidecar resumes from its newest version: nothing consumed twice, the step count continues
    again = Sidecar(drafter_model(lm), sidecar_cfg(), traces, versions, print_fn=lambda *_: None)
    assert (again.version, again.shard, again.blocks) == (sidecar.version, sidecar.shard, sidecar.blocks)
    assert again.poll() is None
    assert torch.equal(again.model.drafter_head.proj.B, trainer_side.drafter_head.proj.B)
