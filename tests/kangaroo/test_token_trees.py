"""Token trees: the shape, mask and positions by hand; a tree verify pass equals one-token steps along each node's path
bit for bit (the engine, and the plain path to rounding); the accepted path's rows made consecutive; decoding with
trees equals greedy and plain sampling for the self-drafter and the lookups, across many rejections; a tree beside
other sequences in a batch keeps its bits."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.blocks import Draft
from kangaroo.draft_policy import ThresholdStop, make_policy
from kangaroo.drafters import SuffixMemory, make_drafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.llama_forward import new_cache, run_layers, run_layers_batch
from kangaroo.sampling import SamplingParams
from kangaroo.speculative import drafter_step, kangaroo_generate, prefill, verify
from kangaroo.token_tree import TokenTree, TreeSlots
from kangaroo.tree_accept import accepted_path
from kangaroo.verify_cost import CostCurve
from tests.helpers import make_tiny_llama, prompts

engine = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")
TREE = TokenTree((0, 0, 1, 1, 2, 3, 0))   # x -> {1, 2, 7}; 1 -> {3, 4}; 2 -> {5}; 3 -> {6}
FLAT = CostCurve(shallow_ms=[0.1] * 8, deep_ms=[5.0] * 8, head_ms=0.01)   # rows free: drafting and branches pay


@pytest.fixture
def engine_on():
    cpu_engine.set_enabled(True)
    yield
    cpu_engine.set_enabled(True)


def test_shape_mask_and_positions_by_hand():
    t = TokenTree((0, 0, 1, 1, 2))
    assert t.depths == (0, 1, 1, 2, 2, 2) and t.children(1) == (3, 4) and t.path(5) == [0, 2, 5]
    assert t.main_line() == [1, 3] and t.main_line(2) == [5] and not t.is_main(2) and t.is_main(3)
    assert TokenTree.chain(3).is_chain and not t.is_chain
    slots = TreeSlots(3, t)   # three committed positions 0..2, x at slot 3
    assert slots.positions(3, 6) == [3, 4, 4, 5, 5, 5]
    assert slots.positions(5, 2) == [4, 5]   # a pass over nodes 2 and 3 only
    want = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0, 0],    # x
                         [1, 1, 1, 1, 1, 0, 0, 0, 0],    # 1
                         [1, 1, 1, 1, 0, 1, 0, 0, 0],    # 2: not its sibling 1
                         [1, 1, 1, 1, 1, 0, 1, 0, 0],    # 3: x, 1, itself
                         [1, 1, 1, 1, 1, 0, 0, 1, 0],    # 4: not its sibling 3
                         [1, 1, 1, 1, 0, 1, 0, 0, 1]],   # 5: x, 2, itself
                        dtype=torch.bool)
    assert torch.equal(slots.mask(3, 6, "cpu"), want)
    assert torch.equal(slots.mask(7, 2, "cpu"), want[4:])
    assert slots.spec().tolist() == [3, -1, 0, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="earlier node"):
        TokenTree((0, 2))
    with pytest.raises(ValueError, match="outside the tree"):
        slots.positions(2, 1)


def _tree_and_steps(lm, dtype):
    """The rows of a tree pass over TREE after a prefix, and for each node the last row of one-token steps along
    its path (fresh caches)."""
    body, g = lm.model, torch.Generator().manual_seed(3)
    prefix = torch.randint(0, 97, (1, 9), generator=g)
    toks = torch.randint(0, 97, (1, TREE.size + 1), generator=g)

    def run(chunks, trees):
        cache = new_cache(lm.config, 4, 64, dtype, "cpu")
        return [run_layers(body.layers, body.embed_tokens(c), cache, body.rotary_emb, t)
                for c, t in zip(chunks, trees)], cache

    (_, tree_rows), cache = run([prefix, toks], [None, TreeSlots(9, TREE)])
    steps = [run([prefix] + [toks[:, [i]] for i in TREE.path(n)], [None] * (len(TREE.path(n)) + 1))[0][-1][0, 0]
             for n in range(TREE.size + 1)]
    return tree_rows[0], torch.stack(steps), cache, (prefix, toks, run)


@engine
def test_tree_rows_equal_steps_along_each_path_on_the_engine(engine_on):
    lm = make_tiny_llama(dtype=torch.float32)
    rows, steps, cache, (prefix, toks, run) = _tree_and_steps(lm, torch.float32)
    assert torch.equal(rows, steps)   # every node, bit for bit
    path = TREE.path(6)               # x, 1, 3, 6 moved to consecutive slots: the cache a chain would hold
    cache.keep([9 + i for i in path], 9)
    (_, chain), ref = run([prefix, toks[:, path]], [None, None])
    assert cache.length == 13 and torch.equal(cache.k[..., :13, :], ref.k[..., :13, :])
    assert torch.equal(cache.v[..., :13, :], ref.v[..., :13, :])


def test_tree_rows_equal_steps_along_each_path_on_the_plain_path(engine_on):
    """The plain path (CUDA, other dtypes) masks the same keys; its kernels round a block and a step apart, a
    chain's as a tree's, so equal to rounding (float64 here)."""
    cpu_engine.set_enabled(False)
    rows, steps, *_ = _tree_and_steps(make_tiny_llama(), torch.float64)
    torch.testing.assert_close(rows, steps, rtol=1e-12, atol=1e-12)


@engine
def test_a_tree_beside_other_sequences_keeps_its_bits(engine_on):
    lm = make_tiny_llama(dtype=torch.float32)
    body, g = lm.model, torch.Generator().manual_seed(8)
    chunks = [(torch.randint(0, 97, (1, p), generator=g), torch.randint(0, 97, (1, n), generator=g))
              for p, n in ((9, TREE.size + 1), (5, 3), (12, 4))]
    trees = [TreeSlots(9, TREE), None, TreeSlots(12, TokenTree((0, 0, 0)))]

    def caches():
        out = []
        for prefix, _ in chunks:
            c = new_cache(lm.config, 4, 64, torch.float32, "cpu")
            run_layers(body.layers, body.embed_tokens(prefix), c, body.rotary_emb)
            out.append(c)
        return out

    alone = [run_layers(body.layers, body.embed_tokens(x), c, body.rotary_emb, t)
             for (_, x), c, t in zip(chunks, caches(), trees)]
    together = run_layers_batch(body.layers, [body.embed_tokens(x) for _, x in chunks], caches(), body.rotary_emb,
                                trees)
    assert all(torch.equal(a, b) for a, b in zip(alone, together))


def _km(seed=0):
    return KangarooModel(model_id="tiny", base_model=make_tiny_llama(seed=seed, dtype=torch.float32), exit_layer=2)


@engine
@pytest.mark.parametrize("greedy", [True, False])
def test_verify_of_a_lookup_tree_and_its_commit(engine_on, greedy):
    """A hand-made lookup tree whose every node is the verifier's pick at its parent but one branch: verify's node
    rows equal a chain verify of each path; accept takes the agreed path; the caches then equal a chain's."""
    km = _km()
    ids = prompts(1)[0]
    params = SamplingParams() if greedy else SamplingParams(1.0, seed=3)
    ref = greedy_decode(km.base_model, ids, 4, set(), sampling=params).tokens  # the picks along the true path
    tree = TokenTree((0, 0, 1, 1, 3))        # 1 and 3 and 5: the true path; 2, 4: wrong branches
    tokens = [ref[0], (ref[0] + 1) % 97, ref[1], (ref[1] + 5) % 97, ref[2]]
    d = Draft(tokens, None, None, [0.5] * 5, source="ngram", last_token=int(ids[0, -1]), tree=tree)
    caches = km.new_caches(64)
    prefill(km, ids, caches)
    start = caches.deep.length
    blk_caches = km.new_caches(64)
    prefill(km, ids, blk_caches)
    v = verify(km, d, caches, params)
    assert accepted_path(d, v) == [0, 1, 3, 5]
    for node in range(6):
        path = tree.path(node)
        chain = Draft([tokens[i - 1] for i in path[1:]], None, None, [0.5] * (len(path) - 1), source="ngram",
                      last_token=d.last_token)
        c = km.new_caches(64)
        prefill(km, ids, c)
        assert torch.equal(verify(km, chain, c, params).logits[-1], v.logits[node])
    from kangaroo.tree_accept import commit_tree

    blk = commit_tree(km, d, v, caches, start)
    assert blk.committed == ref[:4] and blk.accepted == 3 and blk.draft.tokens == ref[:3]
    assert blk.tree.path == [0, 1, 3, 5] and blk.tree.rejected_off_line() == [2, 4]
    chain = Draft(ref[:3], None, None, [0.5] * 3, source="ngram", last_token=d.last_token)
    verify(km, chain, blk_caches, params)
    assert caches.deep.length == blk_caches.deep.length == start + 4
    for a, b in ((caches.deep, blk_caches.deep), (caches.shallow, blk_caches.shallow)):
        assert torch.equal(a.k[..., :a.length, :], b.k[..., :a.length, :])


def _policy(kind, cost=FLAT):
    return lambda: make_policy(kind, 0.0, cost)


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("kind", ["self", "ngram", "memory", "ngram,memory,self"])
@pytest.mark.parametrize("policy", ["threshold", "goodput"])
def test_decoding_with_trees_equals_greedy(engine_on, plain, kind, policy):
    """Random tiny models (drafts mostly rejected: many rejections, many compactions), width 3: every output is
    greedy's; the self-drafter drafted trees and some blocks accepted a branch (the lookups' trees are rare on a
    random model: their shapes are tested on made-up histories below)."""
    cpu_engine.set_enabled(not plain)
    seen = {"trees": 0, "off_main": 0}

    def on_block(b):
        if b.tree is not None:
            seen["trees"] += 1
            seen["off_main"] += int(any(not b.tree.draft.tree.is_main(i) for i in b.tree.path[1:]))

    for seed in (0, 1):
        km = _km(seed)
        drafter = make_drafter(kind, 6, _policy(policy), memory=SuffixMemory(), width=3)
        for ids in prompts(2) + prompts(1):   # the memory drafter drafts from the earlier outputs
            want = greedy_decode(km.base_model, ids, 30, set()).tokens
            assert kangaroo_generate(km, ids, 30, set(), drafter=drafter, on_block=on_block).tokens == want
    if "self" in kind:
        assert seen["trees"] > 5 and seen["off_main"] > 0


@pytest.mark.parametrize("kind", ["self", "ngram,memory,self"])
def test_sampling_with_trees_equals_plain_sampling(engine_on, kind):
    km, off_main = _km(2), []
    for p in (SamplingParams(1.0, seed=11), SamplingParams(0.7, top_p=0.9, seed=12)):
        drafter = make_drafter(kind, 5, _policy("goodput"), memory=SuffixMemory(), width=3)
        for ids in prompts(2) + prompts(1):
            want = greedy_decode(km.base_model, ids, 30, set(), sampling=p).tokens
            res = kangaroo_generate(km, ids, 30, set(), drafter=drafter, sampling=p, on_block=lambda b: off_main.append(
                b.tree is not None and any(not b.tree.draft.tree.is_main(i) for i in b.tree.path[1:])))
            assert res.tokens == want
    assert any(off_main)   # a sampled branch was accepted


def test_width_one_is_the_chain():
    """A width-1 drafter never drafts a tree, and a tree-less draft of a tree drafter verifies as a chain."""
    km = _km()
    ids = prompts(1)[0]
    blocks = []
    make = make_drafter("self", 4, lambda: ThresholdStop(0.0), width=1)
    kangaroo_generate(km, ids, 20, set(), drafter=make, on_block=blocks.append)
    assert blocks and all(b.tree is None and b.draft.tree is None for b in blocks)
    caches = km.new_caches(64)
    prefill(km, ids, caches)
    blk = drafter_step(km, make_drafter("self", 4, lambda: ThresholdStop(0.0), width=1), ids[0].tolist(), caches)
    assert blk.tree is None
