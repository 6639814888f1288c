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


def test_the_ngram_drafter_merges_its_matches_into_a_tree():
    """Each matched n gives its latest occurrence's continuation, longest first: they share a prefix or branch."""
    from kangaroo.drafters import NGramDrafter

    history = [1, 2, 3, 7, 8, 9, 5, 3, 4, 6, 9, 2, 3]   # "2 3" -> 7 8 9 (n=2); "3" -> 4 6 9 (n=1, latest)
    d = NGramDrafter(4, 1, 2, ThresholdStop(0.8), width=2).draft(None, None, history)
    assert d.tokens == [7, 4] and d.tree.parents == (0, 0)   # the n=2 line (its first at 0.75 < 0.8 stops it), the
    assert d.confidences == [0.75, 0.5]                      # n=1 match's first token beside it
    assert NGramDrafter(4, 1, 2, ThresholdStop(0.8)).draft(None, None, history).tree is None


def test_the_memory_drafter_drafts_suffixdecodings_tree():
    from kangaroo.drafters import MemoryDrafter

    memory = SuffixMemory()
    for out in ([5, 1, 2, 3, 4], [6, 1, 2, 8, 9], [7, 1, 2, 3, 4]):
        memory.add(out)
    nodes, match = memory.lookup_tree([9, 1, 2], 3, 2)
    assert match == 2 and [(n.token, n.parent, n.hits, n.total) for n in nodes[:3]] == [(3, -1, 2, 3), (8, -1, 1, 3),
                                                                                          (4, 0, 2, 2)]
    assert [n.token for n in nodes] == [3, 8, 4, 9]   # the main line first, then the best branch's own continuation
    d = MemoryDrafter(4, memory, ThresholdStop(0.0), width=2).draft(None, None, [9, 1, 2])
    assert d.tokens == [3, 4, 8] and d.tree.parents == (0, 1, 0)    # threshold: branches at the first position
    chain = MemoryDrafter(4, memory, ThresholdStop(0.0)).draft(None, None, [9, 1, 2])
    assert chain.tokens == [3, 4] and chain.tree is None


def test_the_pay_rule_on_given_costs():
    """Q4_1-like costs (a verified row ~0.24 of a step) stay a chain, float32-like (~0.02) branch; per block, a
    branch joins when its calibrated chance of being the accepted token beats its row's share of the block."""
    from kangaroo.draft_policy import BRANCH_GAINS, GoodputPolicy, auto_tree_width

    q4 = CostCurve(shallow_ms=[1.0, 1.1, 1.2, 1.3], deep_ms=[11.0, 13.6, 16.2, 18.8], head_ms=0.6)
    f32 = CostCurve(shallow_ms=[2.0, 2.02, 2.04, 2.06], deep_ms=[26.0, 26.5, 27.0, 27.5], head_ms=0.6)
    assert auto_tree_width(q4) == 1 and auto_tree_width(f32) == 1 + len(BRANCH_GAINS)
    assert auto_tree_width(f32, gains=(0.06, 0.01)) == 2
    for cost, joins in ((f32, True), (q4, False)):
        pol = GoodputPolicy(cost)
        gain = pol.branch([0.6], (0.0, 0), [], 0.2, "self")   # x's second choice beside a first at 0.6
        assert (gain is not None) == joins
        if joins:
            assert gain == pytest.approx(0.2)   # the prior: its confidence (no verdicts yet)
    deep = pol.branch([0.6], (0.0, 0), [(0.6, True)], 0.2, "ngram", main=True)   # under d_1: times d_1's 0.6
    assert deep is None
    pol = GoodputPolicy(f32)
    assert pol.branch([0.6], (0.0, 0), [(0.6, True)], 0.2, "ngram", main=True) == pytest.approx(0.12)
    assert pol.branch([0.9], (0.0, 0), [], 0.001, "self") is None   # worth less than its row
    assert ThresholdStop(0.5).branch([0.6], (0.0, 0), [], 0.01, "self") == 0.01      # static: the first position
    assert ThresholdStop(0.5).branch([0.6], (0.0, 0), [(0.6, True)], 0.3, "self") is None


def test_the_tree_width_a_run_starts_with():
    from kangaroo.drafter_config import DrafterConfig, tree_width

    f32 = CostCurve(shallow_ms=[2.0, 2.02, 2.04, 2.06], deep_ms=[26.0, 26.5, 27.0, 27.5], head_ms=0.6)
    lines = []
    assert tree_width(DrafterConfig(draft_policy="goodput"), f32, lines.append) == 3 and "width 3" in lines[0]
    assert tree_width(DrafterConfig(draft_policy="threshold"), None) == 1          # no cost curve: chains
    assert tree_width(DrafterConfig(draft_policy="goodput", tree_width=0), f32) == 1
    assert tree_width(DrafterConfig(draft_policy="threshold", tree_width=2), None) == 2


def test_the_calibrator_counts_every_judged_node_branches_apart():
    from kangaroo.blocks import Block, Verification
    from kangaroo.draft_policy import Calibrator, branch_source
    from kangaroo.tree_accept import TreeBlock, line_draft

    tree = TokenTree((0, 0, 1))           # x -> {1 (main), 2 (branch)}; 1 -> {3}
    d = Draft([5, 6, 7], None, None, [0.7, 0.2, 0.5], source="self", tree=tree)
    blk = Block(line_draft(d, [0, 2]), Verification(torch.zeros(2, 9), [6, 4]), 1, [6, 4],
                tree=TreeBlock(d, None, [0, 2]))
    cal = Calibrator()
    cal.observe(blk)   # 1 rejected (main), 2 accepted (branch); 3 never judged
    assert cal.tried == {("self", 7): 1, (branch_source("self"), 2): 1}
    assert cal.accepted == {("self", 7): 0, (branch_source("self"), 2): 1}


@pytest.mark.parametrize("adapter_mode", ["none", "train"])
def test_sequences_with_trees_batched_each_equal_alone_and_greedy(engine_on, adapter_mode):
    """The server's path (``drafter_step_batch``): each sequence its own tree (or chain), one verify pass; every
    sequence equals itself decoded alone, and greedy."""
    from tests.kangaroo.test_batched import decode_together

    tiny = make_tiny_llama(seed=3, dtype=torch.float32)
    km = KangarooModel(model_id="tiny", base_model=tiny, exit_layer=2, adapter_mode=adapter_mode)
    ids_list = prompts(4)
    budgets, joins, widths = [30, 12, 25, 18], [0, 0, 3, 7], [3, 1, 2, 3]

    def new(i):
        return make_drafter("ngram,self", 5, lambda: ThresholdStop(0.0), width=widths[i])

    got = decode_together(km, [new(i) for i in range(4)], ids_list, budgets, joins)
    for i, (ids, n, tokens) in enumerate(zip(ids_list, budgets, got)):
        assert tokens == kangaroo_generate(km, ids, n, set(), drafter=new(i)).tokens
        assert tokens == greedy_decode(tiny, ids, n, set()).tokens


@pytest.mark.parametrize("adapter", ["window", "whole"])
def test_a_tree_nodes_drafter_features_are_its_paths(engine_on, adapter):
    """A trained adapter's window (and a loaded adapter over the whole context) sees a node's own path: its hk
    equals the hk of the same tokens shallow-passed as a chain (the window: bit for bit; the whole context's
    adapter runs on the plain path, to rounding)."""
    from kangaroo.adapter import KangarooAdapter
    from kangaroo.trained_adapter import trained_adapter

    tiny = make_tiny_llama(seed=4, dtype=torch.float32)
    km = KangarooModel(model_id="tiny", base_model=tiny, exit_layer=2)
    torch.manual_seed(1)
    if adapter == "window":
        km.adapter = km.trained_adapter = trained_adapter(tiny, 2, 3)   # a window of 3 positions
        torch.nn.init.normal_(km.adapter.self_attn.o_proj.weight, std=0.2)   # not the identity start
    else:
        km.adapter = KangarooAdapter(tiny.config)
    ids = prompts(1)[0]
    toks = torch.randint(3, 97, (1, TREE.size + 1), generator=torch.Generator().manual_seed(2))

    def shallow(chunks, tree=None):
        c = km.new_caches(64)
        km.forward_shallow(ids, c.shallow)
        return [km.forward_shallow(x, c.shallow, tree if i == len(chunks) - 1 else None).hk for i, x in
                enumerate(chunks)][-1]

    hk = shallow([toks], TreeSlots(ids.shape[1], TREE))
    for node in range(TREE.size + 1):
        path = TREE.path(node)
        want = shallow([toks[:, path[:-1]], toks[:, path[-1:]]] if len(path) > 1 else [toks[:, :1]])
        if adapter == "window":
            assert torch.equal(hk[0, node], want[0, -1])
        else:
            torch.testing.assert_close(hk[0, node], want[0, -1], rtol=1e-5, atol=1e-5)


def test_a_self_trees_rejected_branches_are_reject_tuples(engine_on):
    """DVI reads a tree's block as the chain of its line, and each other judged, rejected node as a reject tuple
    with the features that proposed it and its parent's row."""
    from dvi.block_samples import block_samples

    km = _km(1)
    blocks = []
    kangaroo_generate(km, prompts(1)[0], 40, set(), on_block=blocks.append,
                      drafter=make_drafter("self", 5, lambda: ThresholdStop(0.0), width=3))
    trees = [b for b in blocks if b.tree is not None and b.tree.rejected_off_line()]
    assert trees
    for b in trees:
        samples = block_samples(b)
        line = samples[:b.accepted + (b.accepted < b.drafted)]
        assert [s.token for s in line] == b.draft.tokens[:len(line)]
        extra = samples[len(line):]
        assert len(extra) == len(b.tree.rejected_off_line())
        for s, c in zip(extra, b.tree.rejected_off_line()):
            t = b.tree.draft.tree
            assert (s.token, s.reward, s.pos, s.is_first_reject) == (b.tree.draft.tokens[c - 1], 0, t.depths[c], True)
            assert torch.equal(s.z_phi, b.tree.verification.logits[t.parent(c)])


AVX2_SCRIPT = """
import sys, torch
from kangaroo import cpu_engine
from tests.helpers import make_tiny_llama
from tests.kangaroo.test_token_trees import _tree_and_steps
assert cpu_engine.extension().isa == "avx2"
rows, steps, *_ = _tree_and_steps(make_tiny_llama(dtype=torch.float32), torch.float32)
torch.save({"rows": rows, "steps": steps}, sys.argv[1])
"""


@pytest.mark.slow  # builds the AVX2 extension (cached after the first run)
@engine
def test_the_avx2_build_gives_the_same_tree_bits(engine_on, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    if cpu_engine.extension().isa != "avx512":
        pytest.skip("the native build is the AVX2 one on this CPU")
    env = {**os.environ, "KANGAROO_ENGINE_ISA": "avx2", "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", AVX2_SCRIPT, str(tmp_path / "out.pt")], cwd=repo, env=env, check=True,
                   timeout=900)
    out = torch.load(tmp_path / "out.pt")
    rows, steps, *_ = _tree_and_steps(make_tiny_llama(dtype=torch.float32), torch.float32)
    assert torch.equal(out["rows"], out["steps"]) and torch.equal(out["rows"], rows) and torch.equal(rows, steps)


@engine
def test_a_tree_draft_may_hold_the_hidden_states_of_its_first_nodes_only(engine_on):
    """Drafter-agnostic: a tree draft may carry layer-k states for its first c nodes (x first) and none for the rest
    (verify runs the shallow layers on those, under the tree mask): the rows are those of a draft with none."""
    km = _km(5)
    ids = prompts(1)[0]
    tree = TokenTree((0, 1, 0, 1))    # x -> 1 -> 2; then branches 3 (under x) and 4 (under 1)
    tokens = [11, 12, 13, 14]
    rows = []
    for covered in (0, 3, 5):
        caches = km.new_caches(64)
        prefill(km, ids, caches)
        h = None
        if covered:
            sh = km.forward_shallow(torch.tensor([[int(ids[0, -1])] + tokens[:covered - 1]]), caches.shallow,
                                    TreeSlots(caches.shallow.length, tree))
            h = sh.h
        d = Draft(tokens, h, None, [0.5] * 4, source="feature", last_token=int(ids[0, -1]), tree=tree)
        rows.append(verify(km, d, caches).logits)
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2])
