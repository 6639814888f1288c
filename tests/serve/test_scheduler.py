"""The decode thread in-process (tiny float64 Llama): several requests of different lengths in flight together, joining
and leaving at different blocks, each equal to ``kangaroo_generate`` on it alone; every block reaches the one learner;
a full queue refuses (QueueFull with Retry-After), a cancelled request frees its slot, a shutdown drains; prompts are
read on the prefill thread, and a learning server's learner gets each prompt's targets before that request's blocks."""
import queue
import threading

import pytest
import torch

from dvi.config import BufferConfig, DVIConfig, IOConfig, LoRAConfig, TrainerConfig
from kangaroo.drafter_config import DrafterConfig
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from kangaroo_dvi.serve.drafting import DrafterFactory
from kangaroo_dvi.serve.metrics import ServeMetrics
from kangaroo_dvi.serve.request_state import Sequence
from kangaroo_dvi.serve.scheduler import QueueFull, Scheduler
from kangaroo_dvi.serve.text_stream import TextStream
from tests.helpers import make_tiny_llama

EOS = {2}
WAIT_S = 60  # a bound on waiting for the decode thread, not a speed claim


class IdsTokenizer:
    """decode: one "<id>" per token (enough for the text path; the real tokenizer is in the server tests)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f"<{i}>" for i in ids if not (skip_special_tokens and i in EOS))


def tiny(adapter_mode="none"):
    return KangarooModel(model_id="tiny", base_model=make_tiny_llama(), exit_layer=2, adapter_mode=adapter_mode)


def prompts(lengths, seed=11):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (1, n), generator=g) for n in lengths]


def request(ids, max_tokens, stop=None):
    events = queue.Queue()
    seq = Sequence(prompt=ids, max_tokens=max_tokens, text=TextStream(IdsTokenizer(), stop), sink=events.put, eos=EOS)
    return seq, events


def result(events):
    """(token ids, text, finish_reason) of a finished request's events."""
    ids, text = [], ""
    while True:
        ev = events.get(timeout=WAIT_S)
        if ev.kind == "done":
            return ids, text, ev.finish_reason
        assert ev.kind == "delta", ev
        ids += ev.token_ids
        text += ev.text


DRAFTER = DrafterConfig(model_id="tiny", drafter="hybrid", draft_policy="threshold", threshold=0.0, steps=4)


def scheduler(km, max_batch=4, queue_size=8, learner=None, cfg=DRAFTER):
    factory = DrafterFactory(cfg, km, online=learner is not None, print_fn=lambda *_: None)
    sched = Scheduler(km, factory, max_batch, queue_size, learner, ServeMetrics(learner), print_fn=lambda *_: None)
    return sched, factory


@pytest.mark.parametrize("adapter_mode", ["none", "train"])
def test_requests_in_flight_together_each_equal_kangaroo_generate_alone(adapter_mode):
    km = tiny(adapter_mode)
    sched, factory = scheduler(km, max_batch=3)
    ids_list, budgets = prompts([5, 12, 3, 9, 7]), [30, 9, 24, 17, 1]
    reqs = [request(ids, n) for ids, n in zip(ids_list, budgets)]
    for seq, _ in reqs[:4]:  # queued before the thread starts: three decode together, the fourth waits for a slot
        sched.submit(seq)
    sched.start()
    first = result(reqs[0][1])
    sched.submit(reqs[4][0])  # joins while others are in flight
    outs = [first] + [result(ev) for _, ev in reqs[1:]]
    sched.close(timeout=WAIT_S)
    for ids, n, (tokens, text, finish) in zip(ids_list, budgets, outs):
        ref = kangaroo_generate(km, ids, n, EOS, drafter=factory()).tokens
        assert tokens == ref
        assert text == IdsTokenizer().decode(ref)
        assert finish == ("stop" if ref[-1] in EOS else "length")


def test_every_block_of_every_request_reaches_the_one_learner(tmp_path):
    from tests.serve.test_learning import serve_learner

    km = tiny()
    cfg = DVIConfig(online=True, lora=LoRAConfig(r=4, alpha=8.0), buffer=BufferConfig(capacity=64, topk=16),
                    trainer=TrainerConfig(lr=0.05, batch_size=4, update_every=1, kind="inline", max_ms=None),
                    io=IOConfig(save_dir=str(tmp_path / "ck"), metrics_out=str(tmp_path / "m"), max_k=4))
    learner = serve_learner(km, cfg)
    sched, _ = scheduler(km, learner=learner)
    blocks = []
    orig = learner.dvi.on_block
    learner.dvi.on_block = lambda blk: (blocks.append(blk), orig(blk))
    reqs = [request(ids, 20) for ids in prompts([4, 8, 6])]
    for seq, _ in reqs:
        sched.submit(seq)
    sched.start()
    outs = [result(ev) for _, ev in reqs]
    sched.close(timeout=WAIT_S)
    assert learner.dvi.global_step == len(blocks) == sum(len(s.accept_lengths) for s, _ in reqs)
    assert learner.trainer_steps > 0 and km.drafter_head.proj.B.abs().sum() > 0
    assert all(len(tokens) == 20 or tokens[-1] in EOS for tokens, _, _ in outs)


def test_full_queue_refuses_with_retry_after_and_cancel_frees_the_slot():
    km = tiny()
    sched, _ = scheduler(km, max_batch=1, queue_size=1)
    long_seq, long_ev = request(prompts([5])[0], 400)
    waiting, waiting_ev = request(prompts([6], seed=3)[0], 5)
    sched.submit(long_seq)
    sched.submit(waiting)
    with pytest.raises(QueueFull) as e:  # one decoding + one waiting is the bound, decoding started or not
        sched.submit(request(prompts([4])[0], 5)[0])
    assert e.value.retry_after >= 1
    sched.start()
    assert long_ev.get(timeout=WAIT_S).kind == "delta"  # the long request is decoding, the other waits
    long_seq.cancel()
    tokens, _, _ = result(waiting_ev)  # it got the freed slot and finished
    assert len(tokens) == 5 or tokens[-1] in EOS
    assert len(long_seq.tokens) < 400 and sched.free == [0]
    assert sched.metrics.registry.get_sample_value("kdvi_requests_cancelled_total") == 1
    sched.close(timeout=WAIT_S)


def test_stop_strings_end_the_request_and_cut_the_text():
    km = tiny()
    ids = prompts([6])[0]
    ref = kangaroo_generate(km, ids, 12, EOS).tokens
    stop = f"<{ref[3]}>"
    sched, _ = scheduler(km)
    seq, ev = request(ids, 12, stop=[stop])
    sched.submit(seq)
    sched.start()
    _, text, finish = result(ev)
    sched.close(timeout=WAIT_S)
    full = IdsTokenizer().decode(ref)
    assert finish == "stop" and text == full[:full.index(stop)]


def test_shutdown_lets_requests_in_flight_finish_then_fails_what_is_left():
    km = tiny()
    sched, _ = scheduler(km, max_batch=1, queue_size=2)
    reqs = [request(ids, 10) for ids in prompts([5, 7])]
    for seq, _ in reqs:
        sched.submit(seq)
    sched.start()
    closer = threading.Thread(target=sched.close, kwargs={"timeout": WAIT_S})
    closer.start()
    outs = [result(ev) for _, ev in reqs]  # both finish: the drain waits for the waiting one too
    closer.join()
    assert all(len(t) == 10 or t[-1] in EOS for t, _, _ in outs)
    with pytest.raises(QueueFull):
        sched.submit(request(prompts([3])[0], 3)[0])
    stuck = Scheduler(km, lambda: None, 1, 1, metrics=ServeMetrics())  # never started: nothing can finish
    seq, ev = request(prompts([3])[0], 3)
    stuck.submit(seq)
    assert stuck.close(timeout=0) == 1
    err = ev.get(timeout=1)
    assert err.kind == "error" and err.status == 503


def test_a_failing_learner_stops_learning_but_not_serving():
    km = tiny()

    class Broken:
        prefill_positions, online = 0, False

        def on_block(self, blk):
            raise OSError("disk full")

        def prefilling(self, n):
            pass

    lines = []
    sched = Scheduler(km, DrafterFactory(DRAFTER, km, online=False), 2, 2, Broken(), ServeMetrics(),
                      print_fn=lines.append)
    ids = prompts([6])[0]
    seq, ev = request(ids, 10)
    sched.submit(seq)
    sched.start()
    assert result(ev)[0] == kangaroo_generate(km, ids, 10, EOS).tokens
    sched.close(timeout=WAIT_S)
    assert sched.learner is None and "learner failed (OSError: disk full)" in lines[0]


def test_requests_share_one_memory_and_metrics_count_by_source_as_the_chain_does():
    """The chain ngram,memory,self: a finished request's output goes into the server's one memory store, so the same
    prompt asked again is drafted from it (source memory); every answer stays greedy, and /metrics' mean accepted
    length per source is the chain's counters (committed / blocks) over every request's blocks."""
    from kangaroo.greedy import greedy_decode

    km = tiny()
    cfg = DrafterConfig(model_id="tiny", drafter="ngram,memory,self", draft_policy="threshold", threshold=0.0, steps=4)
    sched, factory = scheduler(km, max_batch=2, cfg=cfg)
    assert factory.sources == ("ngram", "memory", "self", "none") and factory().drafters[1].memory is factory.memory
    ids = prompts([7])[0]
    ref = greedy_decode(km.base_model, ids, 24, EOS).tokens
    sched.start()
    for _ in range(2):  # one after the other: the second starts once the first output is in the memory
        seq, ev = request(ids, 24)
        sched.submit(seq)
        assert result(ev)[0] == ref
    sched.close(timeout=WAIT_S)
    assert len(factory.memory) >= len(ref)
    reg, counts = sched.metrics.registry, sched.metrics.by_source
    blocks = {s: reg.get_sample_value("kdvi_blocks_total", {"source": s}) or 0 for s in factory.sources}
    assert counts["memory"].blocks > 0 and blocks == {s: counts[s].blocks if s in counts else 0 for s in blocks}
    mean = reg.get_sample_value("kdvi_mean_accepted_length", {"source": "memory"})
    assert mean == counts["memory"].committed / counts["memory"].blocks > 1


@pytest.mark.parametrize("learning", [False, True])
def test_prompts_are_read_on_the_prefill_thread_while_others_decode(tmp_path, learning):
    """Prompts go through the prefill thread (the decode thread keeps decoding), a learning server's too; every answer
    stays greedy."""
    from tests.serve.test_learning import learner_cfg, serve_learner

    km = tiny()
    threads = []
    shallow = km.forward_shallow

    def spy(ids, cache):
        threads.append((threading.current_thread().name, ids.shape[1]))
        return shallow(ids, cache)

    km.forward_shallow = spy
    learner = serve_learner(km, learner_cfg(tmp_path)) if learning else None
    sched, _ = scheduler(km, max_batch=3, learner=learner)
    ids_list = prompts([9, 6, 11])
    reqs = [request(ids, 12) for ids in ids_list]
    sched.start()
    for seq, _ in reqs:
        sched.submit(seq)
    outs = [result(ev) for _, ev in reqs]
    sched.close(timeout=WAIT_S)
    km.forward_shallow = shallow
    assert [o[0] for o in outs] == [kangaroo_generate(km, ids, 12, EOS).tokens for ids in ids_list]
    on_prefill_thread = sorted(n for name, n in threads if name.startswith("kdvi-prefill"))
    assert on_prefill_thread == [5, 8, 10]  # each prompt but its last token, and nothing else
    assert sched.state() == (0, 0)


def test_the_learner_gets_each_prompt_then_each_block_of_its_request_in_order(tmp_path, monkeypatch):
    """A learning server: each request's dense prompt targets (scored on the prefill thread) reach the learner on the
    decode thread before the request's first block, and every block of every request reaches it, each right before
    the request commits that block's tokens, so per request the learner sees its blocks in order."""
    from tests.serve.test_learning import learner_cfg, serve_learner

    km = tiny()
    learner = serve_learner(km, learner_cfg(tmp_path))
    assert learner.prefill_positions > 0
    sched, _ = scheduler(km, max_batch=2, learner=learner)
    events = []
    on_prefill, on_block, commit = learner.dvi.on_prefill, learner.dvi.on_block, Sequence.commit
    learner.dvi.on_prefill = lambda t: (events.append(("prompt", t.prompt_len, threading.current_thread().name,
                                                       len(t.positions))), on_prefill(t))
    learner.dvi.on_block = lambda blk: (events.append(("block", list(blk.committed))), on_block(blk))
    monkeypatch.setattr(Sequence, "commit", lambda seq, c: (events.append(("commit", seq.rid, list(c))),
                                                            commit(seq, c))[1])
    reqs = [request(ids, 16) for ids in prompts([9, 6, 11, 7])]  # four requests through two slots
    for seq, _ in reqs:
        sched.submit(seq)
    sched.start()
    outs = [result(ev) for _, ev in reqs]
    sched.close(timeout=WAIT_S)
    by_len = {seq.prompt_len: seq.rid for seq, _ in reqs}
    started, blocks = set(), {seq.rid: [] for seq, _ in reqs}
    for i, ev in enumerate(events):
        if ev[0] == "prompt":
            _, n, thread, scored = ev
            assert thread == "kdvi-decode" and scored == n - 1 and by_len[n] not in started
            started.add(by_len[n])
        elif ev[0] == "block":  # the next event is the commit of this very block, by a request already prompted
            kind, rid, committed = events[i + 1]
            assert kind == "commit" and committed == ev[1] and rid in started
            blocks[rid].append(committed)
    assert started == set(blocks) and sum(e[0] == "block" for e in events) == learner.dvi.global_step
    for (seq, _), (tokens, _, _) in zip(reqs, outs):
        assert [t for c in blocks[seq.rid] for t in c][:len(tokens)] == tokens  # its blocks, in order, make its answer
