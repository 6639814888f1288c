"""kangaroo.timing: the one sync-and-time fence every timer uses."""
from kangaroo import timing


def test_timed_fences_the_call_on_both_sides(monkeypatch):
    events = []
    monkeypatch.setattr(timing, "sync", lambda device: events.append(("sync", str(device))))
    out, seconds = timing.timed(lambda: events.append("fn") or 7, "cuda:1")
    assert out == 7 and seconds >= 0.0
    assert events == [("sync", "cuda:1"), "fn", ("sync", "cuda:1")]
    events.clear()
    assert timing.elapsed_ms(lambda: events.append("fn"), "cpu") >= 0.0
    assert events == [("sync", "cpu"), "fn", ("sync", "cpu")]


def test_sync_is_a_no_op_on_the_cpu():
    timing.sync("cpu")  # no CUDA call is made (none exists on a CPU-only build)
    assert timing.now("cpu") <= timing.now("cpu")
