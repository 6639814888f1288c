"""The drafter chain: --drafter values, who wins a block, the per-drafter counters block by block, declined
candidates judged for the drafter that declined them, and what begin/end/trainable_params reach."""
import pytest
import torch

from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafter_config import AUTO_DRAFTER, DrafterConfig, build_drafter, new_memory, resolve_auto
from kangaroo.drafters import DrafterChain, MemoryDrafter, NGramDrafter, SelfDrafter, chain_names, make_drafter
from kangaroo.drafters.lookup import LookupDrafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate


def test_drafter_values():
    assert chain_names("self") == ["self"] and chain_names("hybrid") == ["ngram", "self"]
    assert chain_names(" ngram, memory ,self") == ["ngram", "memory", "self"] == chain_names(AUTO_DRAFTER)
    assert resolve_auto(DrafterConfig()).drafter == AUTO_DRAFTER
    assert resolve_auto(DrafterConfig(), online=True).drafter == "ngram,feature,self"  # both learn online
    assert resolve_auto(DrafterConfig(), feature=True).drafter == "ngram,memory,feature,self"  # a deployed one
    for bad, why in (("bogus", "unknown drafter bogus"), ("", "unknown drafter"), ("ngram,ngram", "twice"),
                     ("self,ngram", "must come last"), ("ngram,bogus,self", "unknown drafter bogus")):
        with pytest.raises(ValueError, match=why):
            chain_names(bad)
    with pytest.raises(ValueError, match="must come last"):
        DrafterChain([SelfDrafter(2), NGramDrafter(2)])
    with pytest.raises(ValueError, match="each once"):
        DrafterChain([NGramDrafter(2), NGramDrafter(2)])


class Scripted(LookupDrafter):
    """Proposes the next planned (tokens, confidences) each block; records what it was told."""

    def __init__(self, name, plan, policy=None):
        self.name = name
        super().__init__(4, policy)
        self.plan, self.begun, self.ended, self.judged = list(plan), [], [], []

    def lookup(self, history):
        return self.plan.pop(0) if self.plan else ([], [])

    def begin(self, prompt):
        self.begun.append(list(prompt))

    def end(self, output):
        self.ended.append(list(output))

    def observe_declined(self, token, conf, verifier_token):
        self.judged.append((token, conf, verifier_token))
        super().observe_declined(token, conf, verifier_token)


class KeepAbove(ThresholdStop):
    """Keeps a candidate only if its confidence is at least the bar (else declines it: the chain moves on)."""
    name = "keep-above"

    def decide(self, confs, source="self"):
        return confs[-1] >= self.threshold, True


def test_first_drafter_with_a_kept_token_wins_and_counters_add_up(tiny_llama):
    """Block 1: a drafts 2 right tokens; block 2: a has nothing, b drafts 1 right and 1 wrong; block 3: a declines
    its (right) candidate and b has nothing: a greedy step, a's candidate judged by v_0; block 4: b drafts a wrong
    token."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(2))
    ref = greedy_decode(tiny_llama, ids, 8, set()).tokens
    wrong = lambda t: (t + 1) % 97  # noqa: E731
    a = Scripted("a", [([ref[0], ref[1]], [0.9, 0.9]), ([], []), ([ref[5]], [0.7])], KeepAbove(0.8))
    b = Scripted("b", [([ref[3], wrong(ref[4])], [0.6, 0.6]), ([], []), ([wrong(ref[6])], [0.5])])
    chain = DrafterChain([a, b])
    blocks = []
    res = kangaroo_generate(km, ids, 8, set(), drafter=chain, on_block=blocks.append)
    assert res.tokens == ref
    assert [(blk.source, blk.drafted, blk.accepted, len(blk.committed)) for blk in blocks] == [
        ("a", 2, 2, 3), ("b", 2, 1, 2), ("none", 0, 0, 1), ("b", 1, 0, 1), ("none", 0, 0, 1)]
    assert [sorted(blk.draft.tried_ms) for blk in blocks] == [["a"], ["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"]]
    assert all(blk.draft.ms == pytest.approx(sum(blk.draft.tried_ms.values())) for blk in blocks)
    ca, cb, cn = (chain.by_source[k] for k in ("a", "b", "none"))
    assert (ca.calls, ca.blocks, ca.drafted, ca.accepted, ca.committed) == (5, 1, 2, 2, 3)
    assert (cb.calls, cb.blocks, cb.drafted, cb.accepted, cb.committed) == (4, 2, 3, 1, 3)
    assert (cn.calls, cn.blocks, cn.committed) == (0, 2, 2)
    assert ca.draft_ms == pytest.approx(sum(blk.draft.tried_ms["a"] for blk in blocks))
    assert cb.verify_ms == pytest.approx(blocks[1].verification.ms + blocks[3].verification.ms)
    assert a.judged == [(ref[5], 0.7, ref[5])]   # declined in block 3, judged right by that block's v_0
    assert a.begun == b.begun == [ids[0].tolist()] and a.ended == b.ended == [ref]


def test_only_the_self_drafter_has_trainable_params_and_a_memory_is_shared(tiny_llama):
    from kangaroo.drafter_head import attach_drafter_head

    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    attach_drafter_head(km, r=2, alpha=4.0)
    chain = make_drafter("ngram,memory,self", 3, lambda: ThresholdStop(0.5))
    assert [d.name for d in chain.drafters] == ["ngram", "memory", "self"] and chain.runs_model
    assert chain.trainable_params(km) == SelfDrafter(3).trainable_params(km) != []
    assert make_drafter("ngram,memory", 3, lambda: ThresholdStop(0.5)).trainable_params(km) == []
    cfg = DrafterConfig(drafter="memory,self", draft_policy="threshold", memory_tokens=123)
    memory = new_memory(cfg)
    assert memory.max_tokens == 123 and new_memory(DrafterConfig(drafter="hybrid")) is None
    one, two = (build_drafter(cfg, km, memory=memory) for _ in range(2))
    mem_one, mem_two = one.drafters[0], two.drafters[0]
    assert isinstance(mem_one, MemoryDrafter) and mem_one.memory is mem_two.memory is memory
    assert mem_one.policy is not mem_two.policy   # per sequence: each calibrates on its own
    assert build_drafter(cfg, km).drafters[0].memory is not memory


def test_memory_seed_starts_the_memory_and_bad_seeds_get_one_line(tmp_path):
    from common.errors import UserError

    seed = tmp_path / "answers.jsonl"
    seed.write_text('{"question_id": 1, "token_ids": [[5, 6, 7, 8], [9, 10]]}\n\n'
                    '{"question_id": 2, "token_ids": [[1]]}\n')
    memory = new_memory(DrafterConfig(drafter="ngram,memory", memory_seed=str(seed)))
    assert memory.added == 2 and memory.lookup([5, 6], 3).tokens == [7, 8]  # [1] alone holds no continuation
    for text, why in (('{"question_id": 1}\n', "line 1: not an answer with token_ids"),
                      ('{"token_ids": [[1, 2]]}\n{"token_ids": [[1, "x"]]', "line 2: not an answer")):
        seed.write_text(text)
        with pytest.raises(UserError, match=why):
            new_memory(DrafterConfig(drafter="memory", memory_seed=str(seed)))
    with pytest.raises(UserError, match="does not exist"):
        new_memory(DrafterConfig(drafter="memory", memory_seed=str(tmp_path / "nope.jsonl")))
    with pytest.raises(UserError, match="--drafter: .*must come last"):
        DrafterConfig(drafter="self,memory")
    with pytest.raises(UserError, match="--memory-tokens"):
        DrafterConfig(memory_tokens=0)
