"""Batched passes over several sequences (kangaroo/batched.py, speculative.verify_batch / drafter_step_batch): each
sequence's result equals its single-sequence pass, and several requests of different lengths decoded together,
joining and leaving at different blocks, each equal ``kangaroo_generate`` on it alone."""
import pytest
import torch

from kangaroo import cpu_engine
from kangaroo.batched import head_groups, verifier_logits_batch
from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafters import make_drafter
from kangaroo.greedy import clip_at_stop
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.llama_forward import run_layers, run_layers_batch
from kangaroo.speculative import drafter_step_batch, kangaroo_generate, prefill
from tests.helpers import make_tiny_llama


def prompts(lengths, seed=5, vocab=97):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (1, n), generator=g) for n in lengths]


def test_run_layers_batch_equals_run_layers_per_sequence(tiny_llama):
    body = tiny_llama.model
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    seqs = prompts([5, 9, 3])
    solo, batch = [km.new_caches(32).deep for _ in seqs], [km.new_caches(32).deep for _ in seqs]
    for c1, c2, n in zip(solo, batch, (2, 0, 4)):  # different cached prefixes
        c1.advance(n)
        c2.advance(n)
    hs = [body.embed_tokens(x) for x in seqs]
    outs = run_layers_batch(km.deep_layers, hs, batch, body.rotary_emb)
    for h, c, out in zip(hs, solo, outs):
        assert torch.equal(out, run_layers(km.deep_layers, h, c, body.rotary_emb))
    assert [c.length for c in batch] == [c.length for c in solo] == [7, 9, 7]


def test_head_groups_never_split_a_sequence_and_respect_the_engine_rows():
    assert head_groups([3, 5, 7], engine=False) == [[0], [1], [2]]
    assert head_groups([3, 5, 7], engine=True) == [[0, 1, 2]]
    assert head_groups([7, 7, 7, 16, 1], engine=True) == [[0, 1], [2], [3], [4]]


def test_verifier_head_over_several_sequences_is_bit_exact():
    """float32 on the lean engine (where it builds): rows of several sequences in one head call give the logits each
    sequence gets alone."""
    lm = make_tiny_llama(dtype=torch.float32)
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(1, n, 32, generator=g) for n in (1, 4, 7, 3)]
    for h, z in zip(hs, verifier_logits_batch(km, hs)):
        assert torch.equal(z, km.verifier_logits(h))
    if cpu_engine.extension() is not None:
        assert cpu_engine.applies(torch.cat(hs[:3], dim=1))  # the grouped call did go to the engine


def decode_together(km, drafters, ids_list, budgets, joins):
    """Continuous batching at block granularity: sequence i joins at step ``joins[i]`` and leaves when done."""
    state = {}
    out = [None] * len(ids_list)
    step = 0
    while any(o is None for o in out):
        for i, ids in enumerate(ids_list):
            if joins[i] == step:
                caches = km.new_caches(ids.shape[1] + budgets[i] + 8)
                history = ids[0].tolist()
                drafters[i].begin(history)
                prefill(km, ids, caches)
                state[i] = (caches, history, [])
        live = [i for i in state if out[i] is None]
        if live:
            blocks = drafter_step_batch(km, [drafters[i] for i in live], [state[i][1] for i in live],
                                        [state[i][0] for i in live])
            for i, blk in zip(live, blocks):
                drafters[i].observe(blk)
                caches, history, tokens = state[i]
                n = len(tokens)
                tokens[:], stop = clip_at_stop(tokens + blk.committed, set(), budgets[i])
                history.extend(tokens[n:])
                if stop:
                    out[i] = list(tokens)
        step += 1
    return out


@pytest.mark.parametrize("kind,adapter_mode", [("self", "none"), ("hybrid", "none"), ("ngram", "none"),
                                               ("self", "train")])
def test_requests_in_flight_together_equal_each_alone(tiny_llama, kind, adapter_mode):
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2, adapter_mode=adapter_mode)
    ids_list = prompts([6, 11, 3, 8])
    budgets, joins = [30, 12, 25, 18], [0, 0, 3, 7]

    def new():
        return make_drafter(kind, 4, lambda: ThresholdStop(0.0))

    got = decode_together(km, [new() for _ in ids_list], ids_list, budgets, joins)
    for ids, n, tokens in zip(ids_list, budgets, got):
        assert tokens == kangaroo_generate(km, ids, n, set(), drafter=new()).tokens
