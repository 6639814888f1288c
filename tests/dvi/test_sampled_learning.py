"""DVI under sampling (docs/dvi.md, "Sampled traffic"): the labels come from the coupled rule (accepted iff the
drafted token is the verifier's pick at that position), the KD target is the verifier's raw logits, CE's target is
the committed (sampled) token, and learning online from sampled traffic stays lossless."""
import torch

from dvi.block_samples import block_samples
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.sampling import SamplingParams
from kangaroo.speculative import kangaroo_generate
from tests.dvi.test_online_loop import make
from tests.helpers import make_tiny_llama, prompts

HOT = SamplingParams(1.5, top_p=0.95, seed=21)


def test_sampled_tuples_take_the_coupled_labels_and_the_raw_verifier_logits():
    km = KangarooModel(model_id="tiny", base_model=make_tiny_llama(), exit_layer=2)
    blocks = []
    for ids in prompts(3):
        kangaroo_generate(km, ids, 40, set(), steps=4, threshold=0.0, sampling=HOT, on_block=blocks.append)
    judged, dense = [], []
    for b in blocks:
        v = b.verification
        for s in block_samples(b, dense=True):
            assert torch.equal(s.z_phi, v.logits[s.pos - 1])   # KD: the verifier's raw logits, untempered
            if s.kd_only:
                assert s.token == v.tokens[s.pos - 1]          # a committed (sampled) token
                dense.append(s)
            else:
                assert s.reward == int(s.token == v.tokens[s.pos - 1])   # the coupled rule
                judged.append(s)
    accepted = [s for s in judged if s.reward]
    assert accepted and len(accepted) < len(judged) and dense
    # CE trains on what was accepted: the sampled pick, which is not always the verifier's argmax
    assert any(s.token != int(s.z_phi.argmax()) for s in accepted)


def test_learning_from_sampled_traffic_stays_lossless(tmp_path):
    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true")
    for ids in prompts():
        res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0, on_block=learner.on_block, sampling=HOT)
        assert res.tokens == greedy_decode(lm, ids, 30, set(), sampling=HOT).tokens
    assert learner.train_steps > 5 and km.drafter_head.proj.B.abs().sum() > 0
