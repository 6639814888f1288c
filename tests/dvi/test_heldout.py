"""Held-out agreement on a tiny model: the capture is the verifier's greedy answer, deterministic and cached (a bad
file is captured again, in one line); the numbers are what the deployed drafter drafts; they move with training,
on the trainer's thread when it has one; and they reach the CSV, the plot, the summary and the server's gauges."""
import json
import threading

import pytest
import torch

from dvi.config import HeldoutConfig
from dvi.heldout import FeatureHeldout, SelfHeldout, chain_lengths, score
from dvi.heldout_capture import HeldoutCapture, cache_path, capture, capture_key, load_or_capture
from dvi.heldout_eval import attach
from dvi.heldout_prompts import heldout_prompts
from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.drafters import SelfDrafter
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from tests.dvi.test_online_loop import make, run
from tests.helpers import make_tiny_llama, prompts


def prompt_file(tmp_path, n=6, seed=5, name="p.jsonl"):
    g = torch.Generator().manual_seed(seed)
    path = tmp_path / name
    path.write_text("".join(json.dumps({"prompt_ids": torch.randint(3, 97, (int(k),), generator=g).tolist()}) + "\n"
                            for k in torch.randint(1, 9, (n,), generator=g)))
    return path


def config(tmp_path, **kw) -> HeldoutConfig:
    base = dict(file=str(prompt_file(tmp_path)), positions=40, tokens=10, cache=str(tmp_path / "cache"))
    return HeldoutConfig(**(base | kw))


def tiny(dtype=torch.float32, seed=0, adapter=False, lora=False, folder=None):
    """A tiny split model; ``adapter``: a trained adapter (window 4) whose attention adds something; ``folder``: an
    adapter folder over the whole context (frozen) made like that, loaded."""
    lm = make_tiny_llama(seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(11)
    if folder is not None:
        from kangaroo.adapter import save_adapter
        from kangaroo.trained_adapter import identity_adapter

        made = identity_adapter(lm, 2, None)
        with torch.no_grad():
            made.self_attn.o_proj.weight.copy_(torch.randn(made.self_attn.o_proj.weight.shape, generator=g) * 0.3)
        save_adapter(made, folder)
    mode = "train" if adapter else "load" if folder is not None else "none"
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2, adapter_mode=mode, adapter_window=4,
                       adapter_path=None if folder is None else str(folder))
    with torch.no_grad():
        if adapter:
            o = km.trained_adapter.self_attn.o_proj.weight
            o.copy_(torch.randn(o.shape, generator=g, dtype=o.dtype) * 0.3)
        if lora:
            head = attach_drafter_head(km, r=4, alpha=8.0)
            head.proj.B.copy_(torch.randn(head.proj.B.shape, generator=g) * 0.5)
    return lm, km


def cap_of(km, cfg, eos=frozenset()):
    return capture(km, heldout_prompts(cfg, None, "tiny"), cfg.positions, cfg.tokens, set(eos))


def test_the_capture_is_the_verifiers_greedy_answer_and_deterministic(tmp_path):
    lm, km = tiny()
    cfg = config(tmp_path)
    cap = cap_of(km, cfg)
    cap.check()
    assert cap.n == 40 and torch.equal(cap.target, cap_of(km, cfg).target)
    for s, ids in enumerate(cap.ids):
        p = cap.prompt_lens[s]
        answer = greedy_decode(lm, ids[None, :p], len(ids) - p, set()).tokens
        assert ids[p:].tolist() == answer
        assert cap.pos[cap.seq == s].tolist() == list(range(p - 1, len(ids) - 1))  # the last prompt token on
        for other in (cap.h, cap.h_last):
            assert other[s].shape == (len(ids) - 1, km.config.hidden_size)
    assert torch.equal(cap.rows(cap.h_last, -1)[1:10], torch.cat(cap.h_last)[cap.prompt_lens[0] - 1:][:9])


def test_an_eos_ends_an_answer_and_too_few_prompts_are_one_line(tmp_path):
    _, km = tiny()
    cfg = config(tmp_path)
    free = cap_of(km, cfg)
    eos = int(free.target[3])
    cap = cap_of(km, cfg, {eos})
    assert all(eos not in ids[p:-1].tolist() for ids, p in zip(cap.ids, cap.prompt_lens))
    with pytest.raises(Exception, match="gave .* answer positions, --heldout-positions asks for 1000"):
        cap_of(km, config(tmp_path, positions=1000))


def test_the_capture_is_cached_and_a_bad_file_is_captured_again_in_one_line(tmp_path):
    _, km = tiny()
    cfg = config(tmp_path)
    lines = []
    first = load_or_capture(km, None, cfg, set(), lines.append)
    path = cache_path(cfg, capture_key(km, cfg))
    again = load_or_capture(km, None, cfg, set(), lines.append)
    assert "captured 40 positions" in lines[0] and str(path) in lines[0] and "read from" in lines[1]
    assert torch.equal(again.target, first.target) and torch.equal(again.hk, first.hk)

    def reload(why):
        lines.clear()
        out = load_or_capture(km, None, cfg, set(), lines.append)
        assert len(lines) == 2 and why in lines[0] and "capturing the held-out set again" in lines[0], lines
        assert torch.equal(out.target, first.target) and torch.equal(out.hk, first.hk)

    path.write_bytes(path.read_bytes()[:300])  # cut
    reload("is damaged or not a held-out capture")
    other = cap_of(tiny(seed=1)[1], cfg)  # another model's capture under this run's name
    other.key = {**capture_key(km, cfg), "model": "someone else"}
    torch.save(other.to_file(), path)
    reload("was captured from another model")
    forged = HeldoutCapture.from_file(torch.load(path, weights_only=True))  # right key, other prompts
    forged.ids[0][0] += 1
    torch.save(forged.to_file(), path)
    reload("holds other prompt ids")
    assert "read from" in (load_or_capture(km, None, cfg, set(), lines.append), lines[-1])[1]


def test_the_key_names_the_model_exit_layer_and_source(tmp_path):
    _, km = tiny()
    cfg = config(tmp_path)
    key = capture_key(km, cfg)
    assert capture_key(tiny(seed=1)[1], cfg)["model"] != key["model"]
    assert cache_path(config(tmp_path, tokens=9), key) == cache_path(cfg, key)  # the name is the key's
    assert capture_key(km, config(tmp_path, tokens=9)) != key
    assert cache_path(config(tmp_path, cache=""), key) is None


def test_the_identity_drafters_agreement_equals_a_direct_computation(tmp_path):
    _, km = tiny(dtype=torch.float64)  # the plain path, float64: no kernel in between
    cap = cap_of(km, config(tmp_path, positions=60))
    got = score(SelfHeldout(km).predict(cap), cap, steps=3)
    agree = (cap.hk @ km.head_model.weight.T).argmax(-1) == cap.target
    runs = []
    for i in range(cap.n):
        j = i
        while j < cap.n and j - i < 3 and cap.seq[j] == cap.seq[i] and agree[j]:
            j += 1
        runs.append(j - i)
    assert 0 < got.top1 < 1 and got.n == 60
    assert got.top1 == pytest.approx(agree.double().mean().item())
    assert got.accept_len == pytest.approx(sum(runs) / len(runs))


def test_the_accepted_length_on_a_hand_made_example():
    agree = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    seq = torch.tensor([0] * 7 + [1] * 3)
    assert chain_lengths(agree, seq, cap=3).tolist() == [2, 1, 0, 3, 3, 2, 1, 1, 0, 1]  # never across answers
    assert chain_lengths(agree, seq, cap=10).tolist()[3] == 4


@pytest.mark.parametrize("adapter,lora,folder", [(False, False, False), (False, True, False), (True, True, False),
                                                 (False, True, True)],
                         ids=["identity", "lora-head", "trained-adapter", "loaded-adapter-whole-context"])
def test_the_predictions_are_what_the_deployed_drafter_drafts(tmp_path, adapter, lora, folder):
    """Every draft the self-drafter makes from the verifier's own context (a block's first, and each after an
    accepted one) is the held-out prediction there, and a full block accepts the held-out run from its start."""
    _, km = tiny(adapter=adapter, lora=lora, folder=tmp_path / "adapter" if folder else None)
    cap = cap_of(km, config(tmp_path, positions=60))
    held = SelfHeldout(km)
    held.prepare()
    pred = held.predict(cap)
    runs = chain_lengths(pred == cap.target, cap.seq, 3)
    checked = sum(check_drafts(km, cap, s, pred, runs) for s in range(len(cap.ids)))
    assert checked >= cap.n // 2


def check_drafts(km, cap, s: int, pred, runs) -> int:
    """Decode sequence ``s``'s prompt with the self-drafter (3 tokens a block, always); check its drafts made from
    held-out positions against ``pred`` and each full block's accepted count against ``runs``; how many drafts."""
    ids, p = cap.ids[s], cap.prompt_lens[s]
    flat = {int(q): i for i, q in enumerate(cap.pos.tolist()) if cap.seq[i] == s}  # position -> flat index
    at, checked = [p - 1], [0]

    def seen(blk):
        for j in range(min(blk.accepted + 1, blk.drafted)):
            if at[0] + j in flat:  # drafted from a held-out position (not past the answer's end)
                assert blk.draft.tokens[j] == int(pred[flat[at[0] + j]])
                checked[0] += 1
        if at[0] + blk.drafted < len(ids) - 1:  # a full block, not cut by the answer's end
            assert blk.accepted == int(runs[flat[at[0]]])
        at[0] += len(blk.committed)

    kangaroo_generate(km, ids[None, :p], len(ids) - p, set(), drafter=SelfDrafter(3, ThresholdStop(0.0)),
                      on_block=seen)
    return checked[0]


def test_the_feature_drafters_predictions_are_its_first_drafts_from_the_verifiers_context(tmp_path):
    """Every first token the feature drafter drafts from a held-out position (the verifier's own context, its cache
    caught up over TRUE features) is its held-out prediction there; a sequence's position 0 predicts nothing."""
    from kangaroo.drafters.feature import FeatureDrafter
    from kangaroo.feature_drafter import attach_feature_drafter

    _, km = tiny(lora=True)
    attach_feature_drafter(km, window=3, r=4, alpha=8.0, init="random")
    cap = cap_of(km, config(tmp_path, positions=60))
    held = FeatureHeldout(km)
    held.prepare()
    pred = held.predict(cap)
    checked = 0
    for s in range(len(cap.ids)):
        ids, p = cap.ids[s], cap.prompt_lens[s]
        flat = {int(q): i for i, q in enumerate(cap.pos.tolist()) if cap.seq[i] == s}
        at = [p - 1]

        def seen(blk):
            nonlocal checked
            if at[0] in flat and blk.drafted:
                assert blk.draft.tokens[0] == int(pred[flat[at[0]]])
                checked += 1
            at[0] += len(blk.committed)

        kangaroo_generate(km, ids[None, :p], len(ids) - p, set(), drafter=FeatureDrafter(1, ThresholdStop(0.0)),
                          on_block=seen)
    assert checked >= cap.n // 2
    assert all(int(pred[i]) == -1 for i, q in enumerate(cap.pos.tolist()) if q == 0)


def test_a_trained_drafter_is_evaluated_after_its_steps_on_the_trainer_thread(tmp_path):
    class Spy:
        name = "spy"
        threads: list = []

        def predict(self, capture):
            self.threads.append(threading.current_thread().name)
            return capture.target.clone()

    for kind in ("inline", "thread"):
        _, km, learner, lines = make(tmp_path / kind, "--dvi-online", "true", "--dvi-trainer", kind,
                                     *flags(tmp_path, every=3))
        ev = attach(learner, None, drafters=(Spy(),), print_fn=lines.append)
        before = ev.drafters[0].predict(ev.capture)
        run(km, learner, prompts(3))
        learner.finish()
        after = SelfHeldout(km).predict(ev.capture)
        rows = [r for r in ev.history if r.drafter == "self"]
        assert rows[0].trainer_steps == 0 and rows[-1].trainer_steps == learner.train_steps > 6
        assert all(r.trainer_steps % 3 == 0 for r in rows[1:-1]) and len(rows) >= 3
        assert not torch.equal(before, after)  # the head learned: the held-out predictions moved
        assert {r.top1 for r in ev.history if r.drafter == "spy"} == {1.0}
    assert "dvi-trainer" in Spy.threads and threading.current_thread().name in Spy.threads


def flags(tmp_path, every=50):
    return ("--heldout-file", str(prompt_file(tmp_path)), "--heldout-positions", "40", "--heldout-tokens", "10",
            "--heldout-every", str(every), "--heldout-cache", str(tmp_path / "cache"))


def test_the_rows_reach_the_csv_the_line_the_plot_and_the_summary(tmp_path):
    from dvi.metrics import HELDOUT_COLS, read_acceptance_csv
    from dvi.progress_plot import progress_figure

    _, km, learner, lines = make(tmp_path, "--dvi-online", "true", "--metrics-every", "20", *flags(tmp_path, 10))
    attach(learner, None, print_fn=lines.append)
    run(km, learner, prompts(2))
    summary = learner.finish()
    rows = read_acceptance_csv(tmp_path / "metrics" / "heldout.csv")
    assert list(rows[0]) == list(HELDOUT_COLS) and rows[0]["trainer_steps"] == 0 and rows[0]["n"] == 40
    assert [r["trainer_steps"] for r in rows[1:-1]] == list(range(10, summary["train_steps"] + 1, 10))
    assert summary["heldout"]["self"]["top1"] == pytest.approx(rows[-1]["top1"], abs=1e-6)
    assert summary["heldout"]["self"]["start_top1"] == pytest.approx(rows[0]["top1"], abs=1e-6)
    assert any(" | heldout self top1 " in ln for ln in lines)
    fig = progress_figure(learner.metrics.blocks, learner.metrics.train, ("loss",), 1.0, 10, learner.metrics.heldout)
    labels = {ln.get_label() for ax in fig.axes for ln in ax.get_lines()}
    assert {"self: held-out top-1 agreement", "self: held-out accepted length"} <= labels
    assert (tmp_path / "metrics" / "dvi_progress.png").is_file()


def test_the_server_shows_each_drafter_as_a_gauge_and_in_health(tmp_path):
    from tests.dvi.test_online_loop import dvi_args
    from dvi.online_loop import DVILearner
    from kangaroo.drafter_head import attach_drafter_head
    from kangaroo_dvi.serve.learning import ServeLearner
    from kangaroo_dvi.serve.metrics import ServeMetrics

    _, km = tiny()
    cfg = dvi_args(tmp_path, "--dvi-online", "true", *flags(tmp_path))
    attach_drafter_head(km, r=cfg.lora.r, alpha=cfg.lora.alpha)
    learner = ServeLearner(DVILearner(km, cfg, print_fn=lambda *_: None))
    attach(learner.dvi, None, print_fn=lambda *_: None)
    status = learner.status()["heldout"]["self"]
    text = ServeMetrics(learner).text().decode()
    assert f'kdvi_heldout_top1{{drafter="self"}} {status["top1"]}' in text
    assert f'kdvi_heldout_accept_len{{drafter="self"}} {status["accept_len"]}' in text
    assert status["n"] == 40 and status["trainer_steps"] == 0
    learner.finish()


def test_no_set_without_positions_or_without_a_tokenizer_for_text(tmp_path):
    _, km, learner, lines = make(tmp_path, "--dvi-online", "true", "--heldout-positions", "0")
    assert attach(learner, None) is None and learner.heldout is None
    text = tmp_path / "q.jsonl"
    text.write_text(json.dumps({"question_id": 1, "turns": ["Hello there"]}) + "\n")
    _, km, learner, lines = make(tmp_path / "b", "--dvi-online", "true", "--heldout-file", str(text))
    assert attach(learner, None, print_fn=lines.append) is None
    assert lines[-1].startswith("[heldout] the held-out prompts are text and no tokenizer was given")


def test_a_bad_prompt_record_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt_ids": [3, 4]}) + "\n" + json.dumps({"turns": []}) + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:2 is not a prompt record"):
        list(heldout_prompts(HeldoutConfig(file=str(bad)), None, "tiny"))


def test_a_resumed_run_counts_its_trainer_steps_on(tmp_path):
    _, km, learner, lines = make(tmp_path, "--dvi-online", "true", *flags(tmp_path, 5))
    attach(learner, None, print_fn=lines.append)
    run(km, learner, prompts(1))
    summary = learner.finish()
    steps = summary["heldout"]["self"]["trainer_steps"]
    assert steps == summary["train_steps"] > 0
    _, km2, again, lines = make(tmp_path / "b", "--dvi-online", "true", "--load-lora", summary["final"],
                                *flags(tmp_path, 5))
    ev = attach(again, None, print_fn=lines.append)
    assert ev.history[0].trainer_steps == steps and ev.history[0].top1 == summary["heldout"]["self"]["top1"]
    again.finish()
