"""The trainer thread's share of the machine (``dvi/trainer_share.py``): under load it gets its share of wall time and
no more (bounded, and never starved), on idle time it trains freely, and the steps it deferred are owed and paid
(``BackgroundTrainer`` with a share: on idle time and at the drain), while decoding stays lossless."""
import pytest

from dvi.online_loop import DVILearner
from dvi.trainer_share import TrainerShare
from kangaroo.greedy import greedy_decode
from kangaroo.speculative import kangaroo_generate
from tests.dvi.test_online_loop import dvi_args, make
from tests.helpers import prompts

STEP_S = 0.08  # a trainer step on the bundled model, about


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def simulate(share: float, seconds: float, block_every: float | None = 0.01, burst_s: float = 0.25,
             idle_after_s: float = 1.0, blocks_until: float = float("inf"), prompts: int = 0):
    """A trainer that always wants to step (STEP_S each) beside a decode loop making a block every ``block_every``
    seconds until ``blocks_until`` (None: no blocks), with ``prompts`` being prefilled throughout; returns (policy,
    trainer seconds spent, steps)."""
    clock = Clock()
    ts = TrainerShare(share, max_owed=8, burst_s=burst_s, idle_after_s=idle_after_s, clock=clock)
    ts.prefilling(prompts)
    start, nxt = clock.t, clock.t
    spent, steps = 0.0, 0

    def advance(to):
        nonlocal nxt
        while block_every is not None and nxt <= to and nxt - start < blocks_until:
            clock.t = nxt
            ts.on_block()
            nxt += block_every
        clock.t = to

    while clock.t - start < seconds:
        wait = ts.wait_s()
        if wait > 0:
            advance(clock.t + wait)
            continue
        advance(clock.t + STEP_S)
        ts.charge(STEP_S)
        spent, steps = spent + STEP_S, steps + 1
    return ts, spent, steps


@pytest.mark.parametrize("share", [0.1, 0.4, 0.75])
@pytest.mark.parametrize("prompts", [0, 2])
def test_under_load_the_trainer_gets_its_share_of_wall_time_and_no_more(share, prompts):
    """Prompts being prefilled all along: the trainer steps only on a full bucket, in bursts, and still gets its
    share."""
    seconds = 60.0
    ts, spent, _ = simulate(share, seconds, prompts=prompts)
    assert ts.busy() and ts.busy_wall_s == pytest.approx(seconds, abs=STEP_S)
    assert spent <= share * seconds + ts.burst_s + STEP_S  # bounded: the share, the burst, one step past it
    assert spent >= share * seconds - STEP_S               # not starved either
    assert ts.used_share() == pytest.approx(share, abs=0.02)


def test_idle_time_is_free_and_the_cap_comes_back_with_the_load():
    _, spent, _ = simulate(0.2, 10.0, block_every=None)  # no block at all: nothing to serve, no cap
    assert spent >= 10.0
    # 5 s of load, then idle: after IDLE_AFTER_S without a block the trainer runs flat out
    ts, spent, _ = simulate(0.2, 15.0, blocks_until=5.0)
    assert not ts.busy()
    assert spent >= 0.2 * 5.0 + (15.0 - 5.0 - ts.idle_after_s) - STEP_S
    assert ts.busy_wall_s == pytest.approx(5.0 + ts.idle_after_s, abs=2 * STEP_S)
    assert ts.busy_spent_s <= 0.2 * ts.busy_wall_s + ts.burst_s + STEP_S


def test_the_wait_is_what_the_bucket_needs_and_release_lifts_the_cap():
    clock = Clock()
    ts = TrainerShare(0.5, max_owed=4, burst_s=0.0, idle_after_s=1.0, clock=clock)
    ts.on_block()
    assert ts.wait_s() == 0  # the bucket is at 0: one step may start
    ts.charge(0.2)
    assert ts.wait_s() == pytest.approx(0.4)  # 0.2 s of debt at 0.5 s per s
    clock.t += 0.1
    ts.on_block()
    assert ts.wait_s() == pytest.approx(0.3)  # 0.15 s left after 0.1 s at 0.5
    clock.t += 0.3  # the debt paid
    ts.on_block()
    assert ts.wait_s() == 0
    ts.prefilling(1)  # a prompt on the prefill thread: wait for a full bucket (here 0 s of burst: now)
    assert ts.wait_s() == 0
    ts.charge(0.1)
    assert ts.wait_s() == pytest.approx(0.02)  # 0.2 s to refill, looked at again every POLL_S
    ts.release()  # the decode side stopped: the owed steps run freely
    assert not ts.busy() and ts.wait_s() == 0
    with pytest.raises(ValueError):
        TrainerShare(0.0, max_owed=1)


def test_deferred_steps_are_owed_then_paid_at_the_drain_and_decoding_stays_lossless(tmp_path):
    """The share spent (a clock that never moves, no burst): one step, then every due step is deferred and owed, up to
    ``max_owed``; closing with the drain releases the share and pays exactly the owed steps."""
    lm, km, _, _ = make(tmp_path)
    learner = DVILearner(km, dvi_args(tmp_path, "--dvi-online", "true", "--dvi-trainer", "thread",
                                      "--dvi-trainer-share", "0.5"), print_fn=lambda *_: None)
    bg = learner.bg
    assert bg.share is learner.training.share and bg.share.share == 0.5
    assert bg.share.max_owed == 64 // 4  # a buffer's worth of batches
    bg.share = TrainerShare(0.5, max_owed=5, burst_s=0.0, clock=lambda: 0.0)
    for ids in prompts(3):
        res = kangaroo_generate(km, ids, 30, set(), steps=4, threshold=0.0, on_block=learner.on_block)
        assert res.tokens == greedy_decode(lm, ids, 30, set()).tokens
    assert bg.version == 1 and bg.owed() == 5  # one step, then owed up to the cap
    bg.close(drain=True)
    assert bg.version == 1 + 5 and bg.owed() == 0
    assert learner.finish()["train_steps"] == 6
