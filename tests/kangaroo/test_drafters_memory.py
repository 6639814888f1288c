"""The memory drafter: its suffix memory against brute force, its bound (evicts the oldest, never grows past it),
two sequences sharing one memory (threads too), and a drafter that learns from traffic, lossless."""
import random
import threading

import pytest
import torch

from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafters import DrafterChain, MemoryDrafter, NGramDrafter, SuffixMemory
from kangaroo.drafters.lookup import match_confidence
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate


def brute_lookup(seqs, history, k, nmin, nmax, max_occ):
    """The longest suffix of history found in seqs (ending before a token of the same sequence), its latest
    max_occ occurrences, then k times the token most of the still-matching continuations go on with (ties: the
    latest occurrence's); hits and totals as counts of those continuations."""
    for n in range(min(nmax, len(history)), nmin - 1, -1):
        occ = [(si, e) for si, s in enumerate(seqs) for e in range(n, len(s)) if s[e - n:e] == history[-n:]]
        if occ:
            conts = [seqs[si][e:e + k] for si, e in occ[-max_occ:]]
            tokens, hits, totals = [], [], []
            for i in range(k):
                alive = [c for c in conts if c[:i] == tokens]
                nxt = [c[i] for c in alive if len(c) > i]
                if not nxt:
                    break
                best = max(set(nxt), key=lambda t: (nxt.count(t), max(j for j, c in enumerate(alive)
                                                                       if len(c) > i and c[i] == t)))
                tokens.append(best)
                hits.append(nxt.count(best))
                totals.append(len(alive))
            return tokens, hits, totals, n
    return [], [], [], 0


def test_lookup_matches_brute_force():
    rng = random.Random(0)
    for _ in range(40):
        nmin, nmax = rng.choice([(1, 1), (1, 3), (2, 4), (2, 6)])
        mem, seqs = SuffixMemory(max_tokens=10 ** 6, min_match=nmin, max_match=nmax,
                                 max_occurrences=rng.choice([1, 3, 64])), []
        for _ in range(rng.randrange(1, 6)):
            seqs.append([rng.randrange(5) for _ in range(rng.randrange(1, 30))])
            mem.add(seqs[-1])
        kept = [s for s in seqs if len(s) > nmin]  # shorter outputs hold no n-gram with a continuation
        for _ in range(20):
            hist = [rng.randrange(5) for _ in range(rng.randrange(0, 8))]
            c = mem.lookup(hist, 4)
            assert (c.tokens, c.hits, c.totals, c.match) == brute_lookup(kept, hist, 4, nmin, nmax,
                                                                         mem.max_occurrences)


def test_memory_is_bounded_and_evicts_the_oldest_first():
    rng = random.Random(1)
    mem = SuffixMemory(max_tokens=200, min_match=2, max_match=4)
    seqs = []
    for _ in range(60):
        seqs.append([rng.randrange(50) for _ in range(rng.randrange(3, 40))])
        mem.add(seqs[-1])
        kept = seqs[mem.evicted:]
        fp = mem.footprint()
        assert len(mem) == fp["tokens"] == sum(len(s) for s in kept) <= 200  # never past the bound
        assert fp["slots"] == len(mem) + len(kept)                          # each with its separator
        # the index holds exactly the kept sequences' n-grams (2..4 tokens), nothing of the evicted ones
        assert fp["keys"] == len({tuple(s[e - n:e]) for s in kept for e in range(2, len(s))
                                  for n in range(2, min(4, e) + 1)}) <= 3 * len(mem)
    assert mem.evicted > 20 and mem.added == 60 and fp["sequences"] == len(kept)
    for _ in range(200):  # exactly the newest outputs remain: lookups equal brute force over them
        hist = [rng.randrange(50) for _ in range(3)] + list(rng.choice(seqs)[:2])
        c = mem.lookup(hist, 5)
        assert (c.tokens, c.hits, c.totals, c.match) == brute_lookup(kept, hist, 5, 2, 4, 64)
    long = list(range(1000, 1500))
    mem.add(long)  # longer than the bound: its last 200 tokens
    assert len(mem) == 200 and mem.lookup([1300, 1301], 3).tokens == [1302, 1303, 1304]
    assert mem.lookup([1200, 1201], 3).tokens == []


def test_two_sequences_share_only_finished_outputs():
    """Each drafter is one sequence's side; the memory is shared: a sequence in flight is invisible to the other
    until it ends, and then the other drafts from it."""
    mem = SuffixMemory(min_match=2)
    a, b = MemoryDrafter(4, mem), MemoryDrafter(4, mem)
    a.begin([1, 2])
    b.begin([7, 8])
    a_history = [1, 2, 10, 11, 12, 13, 14]
    assert b.lookup([9, 10, 11]) == ([], [])   # a's output not finished: nothing
    a.end(a_history[2:])
    tokens, confs = b.lookup([9, 10, 11])
    assert tokens == [12, 13, 14] and confs == [match_confidence(n) for n in (2, 3, 4)]
    b.end([10, 11, 20])                          # 10, 11 went on with 12 once and 20 once: the latest wins
    tokens, confs = a.lookup([10, 11])
    assert tokens == [20] and confs == [match_confidence(2, 1, 2)]


def test_threads_add_and_look_up_concurrently():
    mem = SuffixMemory(max_tokens=500, min_match=1, max_match=3)
    errors = []

    def work(seed):
        rng = random.Random(seed)
        try:
            for _ in range(300):
                mem.add([rng.randrange(20) for _ in range(rng.randrange(2, 30))])
                c = mem.lookup([rng.randrange(20) for _ in range(3)], 4)
                assert len(c.tokens) == len(c.hits) == len(c.totals) <= 4
                assert all(0 < h <= t for h, t in zip(c.hits, c.totals))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and mem.added == 900 and len(mem) <= 500


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_match"):
        SuffixMemory(min_match=3, max_match=2)
    with pytest.raises(ValueError, match="max_tokens"):
        SuffixMemory(max_tokens=0)


def test_memory_drafter_learns_from_traffic_and_stays_lossless(tiny_llama):
    """The first request finds an empty memory: no memory drafts. Asked again (and a second prompt in between),
    the memory drafter drafts from the first output, the verifier accepts, and there are fewer verifier passes."""
    km = KangarooModel(model_id="tiny", base_model=tiny_llama, exit_layer=2)
    chain = DrafterChain([MemoryDrafter(4, SuffixMemory(min_match=2), ThresholdStop(0.0))])
    g = torch.Generator().manual_seed(3)
    p1, p2 = torch.randint(3, 97, (1, 7), generator=g), torch.randint(3, 97, (1, 9), generator=g)
    passes = []
    for ids in (p1, p2, p1):
        res = kangaroo_generate(km, ids, 40, set(), drafter=chain)
        assert res.tokens == greedy_decode(tiny_llama, ids, 40, set()).tokens
        passes.append(res.steps)
    mem = chain.by_source["memory"]
    assert passes[0] == 40 and passes[2] < 20
    assert mem.blocks > 0 and mem.accepted > 20 and mem.calls == sum(passes)


def test_ngram_and_memory_confidence_carry_the_match_length():
    d = NGramDrafter(6, 1, 3)
    tokens, confs = d.lookup([5, 6, 7, 1, 2, 5, 6, 7])   # 5 6 7 matched: 3 tokens
    assert tokens == [1, 2, 5, 6, 7] and confs == [match_confidence(n) for n in range(3, 8)]
    d.begin([4])
    assert d.lookup([4, 9, 3, 9])[1][0] == match_confidence(1) < match_confidence(2) < match_confidence(3)
    assert [match_confidence(n) for n in (1, 2, 3)] == [0.5, 0.75, 0.875] and match_confidence(2, 1, 3) == 0.25
