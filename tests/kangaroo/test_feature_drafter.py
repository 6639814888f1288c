"""The feature drafter (``--drafter feature``): lossless alone and in chains under every policy, its catch-up over
the TRUE features after rejections and other drafters' blocks (equal to recomputing it from scratch), the features
kept on ``Verification`` and in the log (equal to a separate forward's), the log's rollback, the evaluator's
function, and an identity start on a model that repeats its last token (every draft accepted)."""
import pytest
import torch

from kangaroo.draft_policy import make_policy
from kangaroo.drafters import FeatureDrafter, chain_names, make_drafter
from kangaroo.drafters import feature as feature_module
from kangaroo.feature_drafter import attach_feature_drafter, feature_tensors, teacher_forced_top1
from kangaroo.feature_log import FeatureLog
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from kangaroo.verify_cost import CostCurve
from tests.helpers import make_tiny_llama
from tests.kangaroo.test_drafters import repetitive_prompt

FLAT = CostCurve(shallow_ms=[1.0] * 8, deep_ms=[5.0] * 8, head_ms=0.5, feature_ms=0.3)


def repeating_llama():
    """A tiny Llama whose layers add nothing: the last feature is the input token's normed embedding, whose argmax
    (tied head) is that token, so greedy decoding repeats the last prompt token, and a feature drafter at its
    identity start (g_k = f_k) drafts exactly that: every draft is accepted."""
    lm = make_tiny_llama()
    with torch.no_grad():
        for layer in lm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return lm


def perturb(fd, scale, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in feature_tensors(fd).values():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def feature_model(lm=None, window=4, init="random", vocab=None):
    km = KangarooModel(model_id="tiny", base_model=lm if lm is not None else make_tiny_llama(), exit_layer=2)
    if vocab is not None:
        km.set_drafter_vocab(vocab)
    attach_feature_drafter(km, window=window, r=4, alpha=8.0, init=init)
    return km


def ids(n=7, seed=1):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["feature", "ngram,feature", "ngram,memory,feature,self", "feature,self"])
@pytest.mark.parametrize("policy,cost", [("threshold", None), ("goodput", FLAT)])
@pytest.mark.parametrize("steps", [1, 4])
def test_feature_drafter_is_lossless_alone_and_in_chains(kind, policy, cost, steps):
    lm = make_tiny_llama()
    km = feature_model(lm)
    drafter = make_drafter(kind, steps, lambda: make_policy(policy, 0.0, cost))
    for prompt in (repetitive_prompt(), ids(7), ids(1, seed=4)):  # a one-token prompt: no feature before x
        ref = greedy_decode(lm, prompt, 30, set()).tokens
        assert kangaroo_generate(km, prompt, 30, set(), drafter=drafter).tokens == ref


@pytest.mark.parametrize("scale", [0.0, 0.05, 0.2])
def test_identity_start_on_a_repeating_model_and_rollbacks(scale):
    """Identity start on a model that repeats its last token: every draft accepted. Perturbed: its later drafts
    (from its own predicted features) rejected, or every one; lossless either way, pruned vocabulary too."""
    lm = repeating_llama()
    km = feature_model(lm, init="identity", vocab=torch.arange(40, 97))
    perturb(km.feature_drafter, scale)
    blocks = []
    prompt = torch.tensor([[5, 9, 60, 60]])  # the prompt too ends as the model goes on: f_2 predicts 60
    res = kangaroo_generate(km, prompt, 40, set(), drafter=FeatureDrafter(4, make_policy("threshold", 0.0)),
                            on_block=blocks.append)
    assert res.tokens == greedy_decode(lm, prompt, 40, set()).tokens == [60] * 40
    drafted, accepted = sum(b.drafted for b in blocks), sum(b.accepted for b in blocks)
    if scale == 0.0:
        assert accepted == drafted > 0 and len(blocks) == 8
    if scale == 0.05:  # partly accepted blocks: the entries from predicted features are rolled back each time
        assert all(0 < b.accepted < b.drafted for b in blocks)
    if scale == 0.2:
        assert accepted == 0 and drafted == 4 * len(blocks)


@pytest.mark.parametrize("kind", ["feature", "ngram,feature"])
def test_catch_up_equals_recomputing_from_the_true_features(monkeypatch, kind):
    """At every draft, the drafter's first candidate comes from the features it caught up over; after partly
    accepted drafts (its own entries from predicted features dropped), rejected ones, and n-gram blocks it was not
    asked for, that equals running its layer from scratch over the log's TRUE features and the committed tokens."""
    lm = repeating_llama() if kind == "feature" else make_tiny_llama()
    km = feature_model(lm, init="identity", window=3)
    perturb(km.feature_drafter, 0.05)
    fd, seen = km.feature_drafter, []
    real = feature_module.propose
    monkeypatch.setattr(feature_module, "propose", lambda m, g: (seen.append(g.clone()), real(m, g))[1])
    chain = make_drafter(kind, 4, lambda: make_policy("threshold", 0.0))
    checks = []
    orig_draft = FeatureDrafter.draft

    def checked(self, model, caches, history):
        n = len(seen)
        d = orig_draft(self, model, caches, history)
        P = len(history) - 1
        if P > 0:
            f = caches.features.f[:P + 1]  # row P is unread (no entry uses f_P before it is verified)
            fresh = fd.teacher_forced(f, torch.tensor(history[:P + 1]))
            checks.append(torch.allclose(seen[n], fresh[-1:], atol=1e-10, rtol=0))
        return d

    monkeypatch.setattr(FeatureDrafter, "draft", checked)
    blocks = []
    prompt = torch.tensor([[5, 9, 60, 60]]) if kind == "feature" else ids(9)
    res = kangaroo_generate(km, prompt, 40, set(), drafter=chain, on_block=blocks.append)
    assert res.tokens == greedy_decode(lm, prompt, 40, set()).tokens
    assert {b.source for b in blocks} == set(kind.split(",")) and any(b.accepted < b.drafted for b in blocks)
    if kind == "feature":
        assert any(0 < b.accepted < b.drafted for b in blocks)
    assert len(checks) > 5 and all(checks)


def test_features_on_verification_and_in_the_log_equal_a_separate_forward():
    lm = make_tiny_llama()
    km = feature_model(lm)
    blocks, caches = [], []
    prompt = ids(6)
    orig = km.new_caches
    km.new_caches = lambda n: caches.append(orig(n)) or caches[-1]
    res = kangaroo_generate(km, prompt, 20, set(), drafter=make_drafter("ngram,feature", 3,
                                                                         lambda: make_policy("threshold", 0.0)),
                            on_block=blocks.append)
    seq = torch.cat([prompt, torch.tensor([res.tokens])], dim=1)[:, :-1]
    fresh = km.new_caches(64)
    want = km.forward_deep(km.forward_shallow(seq, fresh.shallow).h, fresh.deep)[0]
    log = caches[0].features
    assert log.length == seq.shape[1] and torch.equal(log.ids[:log.length], seq[0])
    torch.testing.assert_close(log.f[:log.length], want, rtol=0, atol=1e-10)
    pos = prompt.shape[1] - 1
    for b in blocks:
        v = b.verification
        assert v.features.shape == (b.drafted + 1, lm.config.hidden_size)
        torch.testing.assert_close(v.features[:b.accepted + 1], want[pos:pos + b.accepted + 1], rtol=0, atol=1e-10)
        torch.testing.assert_close(km.verifier_logits(v.features), v.logits, rtol=0, atol=1e-10)
        pos += b.accepted + 1


def test_feature_log_writes_follow_and_crop_rolls_back():
    log = FeatureLog(8, 2)
    log.write(0, [4, 5, 6], torch.ones(3, 2))
    log.write(3, [7, 8], 2 * torch.ones(2, 2))
    log.crop(4)
    log.write(4, [9], 3 * torch.ones(1, 2))
    assert log.length == 5 and log.ids[:5].tolist() == [4, 5, 6, 7, 9]
    with pytest.raises(ValueError, match="do not follow"):
        log.write(6, [1], torch.ones(1, 2))
    c = log.context(-3, 5, window=3)
    f, tok, first = c.segment(3)  # entry 3: features of positions 1..3, tokens at 2..4
    assert first == 1 and f[:, 0].tolist() == [1, 1, 2] and tok.tolist() == [6, 7, 9]
    assert c.segment(-1)[0].shape[0] == 0 and c.segment(0)[1].tolist() == [5]
    with pytest.raises(ValueError, match="outside"):
        c.segment(4)  # its token (position 5) is not committed yet


def test_teacher_forced_top1_is_the_drafters_argmax_per_entry():
    km = feature_model(vocab=torch.arange(10, 97))
    fd = km.feature_drafter
    f, tokens = torch.randn(9, 32, dtype=torch.float64), torch.randint(3, 97, (9,))
    preds = teacher_forced_top1(km, f, tokens)
    assert len(preds) == 8 and all(10 <= p < 97 for p in preds)
    cache = fd.new_cache(16)  # entry by entry through the draft-time cache: the same argmax, and one call over
    g = torch.cat([fd.step(f[k:k + 1], tokens[k + 1:k + 2], cache) for k in range(8)])  # several entries gives
    assert preds == [km.drafter_token_id(c) for c in fd.drafter_logits_from_hk(g).argmax(-1).tolist()]  # the last
    torch.testing.assert_close(fd.step(f[:-1], tokens[1:], fd.new_cache(16)), g[-1:], rtol=0, atol=1e-12)


def test_chain_grammar_takes_feature_anywhere_before_self():
    assert chain_names("ngram,feature") == ["ngram", "feature"]
    assert chain_names("feature,ngram,self") == ["feature", "ngram", "self"]
    with pytest.raises(ValueError, match="last"):
        chain_names("self,feature")


def test_feature_drafter_needs_one_attached():
    km = KangarooModel(model_id="tiny", base_model=make_tiny_llama(), exit_layer=2)
    with pytest.raises(ValueError, match="attach_feature_drafter"):
        kangaroo_generate(km, ids(), 5, set(), drafter=FeatureDrafter(3))


def test_probe_gate_learns_from_its_first_candidates_and_declines_when_they_miss():
    """A drafter whose candidates miss: its gate learns so from their verdicts and stops paying for them."""
    lm = make_tiny_llama()
    km = feature_model(lm)
    drafter = FeatureDrafter(4, make_policy("goodput", 0.0, FLAT, gate=True))
    res = kangaroo_generate(km, ids(7), 60, set(), drafter=drafter)
    assert res.tokens == greedy_decode(lm, ids(7), 60, set()).tokens
    gate = drafter.policy.gate
    assert gate.probes >= 2 and gate.declined_free > 10 and gate.recent < 0.3  # learned: they miss
