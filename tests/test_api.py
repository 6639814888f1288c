"""The public Python API (kangaroo_dvi): generate with and without online learning, deploy what was learned;
every output equals the model's own greedy output."""
import torch

from dvi.config import BufferConfig, DVIConfig, IOConfig, LoRAConfig, TrainerConfig
from kangaroo.greedy import greedy_decode
from kangaroo_dvi import DrafterConfig, KangarooDVI
from tests.helpers import make_tiny_llama, prompts

SELF = DrafterConfig(model_id="tiny", drafter="self", draft_policy="threshold", threshold=0.0, steps=4)


def test_generate_learn_and_deploy_are_lossless(tmp_path):
    lm = make_tiny_llama()
    plain = KangarooDVI.load("tiny", base_model=lm, drafter=SELF, print_fn=lambda *_: None)
    dvi = DVIConfig(online=True, lora=LoRAConfig(r=4, alpha=8.0), buffer=BufferConfig(capacity=64, topk=16),
                    trainer=TrainerConfig(lr=0.05, batch_size=4, update_every=1, kind="inline", max_ms=None),
                    io=IOConfig(save_dir=str(tmp_path / "ckpt"), metrics_out=str(tmp_path / "m"), max_k=4))
    learning = KangarooDVI.load("tiny", base_model=lm, drafter=SELF, dvi=dvi, print_fn=lambda *_: None)
    for ids in prompts(3):
        ref = greedy_decode(lm, ids, 24, set()).tokens
        assert plain.generate(ids, 24).tokens == ref
        assert learning.generate(ids[0].tolist(), 24).tokens == ref
    summary = learning.close()
    assert summary["train_steps"] > 0 and plain.close() is None
    deployed = KangarooDVI.load("tiny", base_model=lm, drafter=SELF, lora=summary["final"], print_fn=lambda *_: None)
    assert torch.equal(deployed.model.drafter_head.proj.B, learning.model.drafter_head.proj.B)
    assert deployed.model.drafter_head.proj.B.abs().sum() > 0
    ids = prompts(1)[0]
    assert deployed.generate(ids, 24).tokens == greedy_decode(lm, ids, 24, set()).tokens


def test_sampled_generate_equals_plain_sampling_with_the_same_seed():
    """Keywords or a ``SamplingParams``: the same tokens as plain sampling (``greedy_decode(..., sampling=)``); the
    default drafter chain and the self-drafter alike; another seed, other tokens; both forms at once is refused."""
    import pytest

    from kangaroo_dvi import ConfigError, SamplingParams

    lm = make_tiny_llama()
    chain = KangarooDVI.load("tiny", base_model=lm, print_fn=lambda *_: None)
    self_only = KangarooDVI.load("tiny", base_model=lm, drafter=SELF, print_fn=lambda *_: None)
    differs = 0
    for i, ids in enumerate(prompts(3)):
        p = SamplingParams(temperature=0.9, top_p=0.95, top_k=40, seed=11 + i)
        ref = greedy_decode(lm, ids, 24, set(), sampling=p).tokens
        out = chain.generate(ids, 24, temperature=0.9, top_p=0.95, top_k=40, seed=11 + i)
        assert out.tokens == ref and out.sampling == p
        assert self_only.generate(ids, 24, sampling=p).tokens == ref
        differs += chain.generate(ids, 24, temperature=0.9, top_p=0.95, top_k=40, seed=99).tokens != ref
    assert differs > 0 and chain.generate(ids, 8).sampling.greedy
    with pytest.raises(ConfigError, match="either sampling= or temperature="):
        chain.generate(ids, 8, sampling=p, temperature=0.5)
    with pytest.raises(ConfigError, match="--top-p 1.5 must lie in"):
        chain.generate(ids, 8, temperature=0.5, top_p=1.5)
