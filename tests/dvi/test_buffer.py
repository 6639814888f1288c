import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dvi import losses as L
from dvi.buffer import DVIRingBuffer
from dvi.config import BufferConfig
from dvi.types import DVITrainSample
from tests.dvi.helpers import ring

V, K, D, B = 997, 5, 16, 4  # V distinct from every other size, so a dense [*, V] output is unambiguous


class ShapeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out

    def dense(self):
        return [s for s in self.shapes if V in s]


def _buf(store, cap=8, dtype=torch.float16):
    return ring(cap, D, V, store, K, dtype, seed=0)


def _push(buf, token, z=None):
    z = torch.randn(V) if z is None else z
    buf.push(DVITrainSample(torch.randn(D), token, z, reward=token % 2, pos=token % 7 + 1,
                            is_first_reject=token % 2 == 0))
    return z


@pytest.mark.parametrize("store", ["full", "topk"])
def test_capacity_bound_and_wraparound(store):
    buf = _buf(store, cap=6)
    for t in range(6 + 3):
        _push(buf, t)
    assert len(buf) == buf.size == 6 and buf.capacity == 6
    assert sorted(buf.token.tolist()) == [3, 4, 5, 6, 7, 8]  # 0, 1, 2 overwritten (oldest first)
    assert buf.token.tolist() == [6, 7, 8, 3, 4, 5]
    s = buf.sample(6)
    assert sorted(s.token.tolist()) == [3, 4, 5, 6, 7, 8]  # without replacement


def test_partial_buffer_samples_only_filled_slots():
    buf = _buf("full", cap=10)
    for t in (11, 12, 13):
        _push(buf, t)
    for _ in range(5):
        assert sorted(buf.sample(3).token.tolist()) == [11, 12, 13]
    with pytest.raises(ValueError, match="cannot sample 4"):
        buf.sample(4)


@pytest.mark.parametrize("store,dtype", [("full", torch.float16), ("topk", torch.float32)])
def test_sample_shapes_and_dtypes(store, dtype):
    buf = _buf(store, dtype=dtype)
    for t in range(8):
        _push(buf, t)
    s = buf.sample(B)
    assert s.hk.shape == (B, D) and s.hk.dtype == torch.float16
    assert s.token.dtype == torch.long and s.pos.dtype == torch.long
    assert s.reward.dtype == torch.float32 and s.is_first_reject.dtype == torch.bool
    assert set(s.reward.tolist()) <= {0.0, 1.0}
    if store == "full":
        assert s.z_phi.shape == (B, V) and s.z_phi.dtype == dtype
        assert s.z_idx is None and s.z_val is None
    else:
        assert s.z_phi is None
        assert s.z_idx.shape == (B, K) and s.z_idx.dtype == torch.long
        assert s.z_val.shape == (B, K) and s.z_val.dtype == dtype


def test_sample_rows_are_consistent_and_seeded():
    a, b = _buf("full"), _buf("full")
    torch.manual_seed(1)
    zs = {t: _push(a, t) for t in range(8)}
    torch.manual_seed(1)
    for t in range(8):
        _push(b, t)
    sa, sb = a.sample(B), b.sample(B)
    assert torch.equal(sa.token, sb.token)
    for i, t in enumerate(sa.token.tolist()):
        assert torch.equal(sa.z_phi[i], zs[t].half())
        assert sa.reward[i] == t % 2 and sa.pos[i] == t % 7 + 1 and bool(sa.is_first_reject[i]) == (t % 2 == 0)


def test_topk_stores_torch_topk():
    buf = _buf("topk", cap=3, dtype=torch.float32)
    zs = [_push(buf, t) for t in range(3)]
    for i, z in enumerate(zs):
        val, idx = torch.topk(z, K)
        assert torch.equal(buf.z_idx[i].long(), idx) and torch.equal(buf.z_val[i], val)


@pytest.mark.parametrize("d,v,store,dtype,expected", [
    (576, 49152, "full", torch.float16, 576 * 2 + 8 + 1 + 4 + 1 + 1 + 49152 * 2), # 99471
    (576, 49152, "full", torch.float32, 576 * 2 + 15 + 49152 * 4),                # 197775
    (576, 49152, "topk", torch.float16, 576 * 2 + 15 + 1024 * (4 + 2)),           # 7311
    (576, 49152, "topk", torch.float32, 576 * 2 + 15 + 1024 * (4 + 4)),           # 9359
    (4096, 32000, "full", torch.float16, 4096 * 2 + 15 + 32000 * 2),              # 72207
    (4096, 32000, "full", torch.float32, 4096 * 2 + 15 + 32000 * 4),              # 136207
    (4096, 32000, "topk", torch.float16, 4096 * 2 + 15 + 1024 * 6),               # 14351
    (4096, 32000, "topk", torch.float32, 4096 * 2 + 15 + 1024 * 8),               # 16399
])
def test_bytes_per_slot(d, v, store, dtype, expected):
    assert ring(1, d, v, store, 1024, dtype).bytes_per_slot() == expected


def test_bytes_per_slot_hand_numbers():
    assert ring(1, 576, 49152, "topk", 1024, torch.float16).bytes_per_slot() == 7311
    assert ring(1, 4096, 32000, "full", 1024, torch.float32).bytes_per_slot() == 136207


@pytest.mark.parametrize("kwargs,flag", [
    (dict(store="dense"), "--dvi-store"),
    (dict(logits_dtype="int8"), "--dvi-logits-dtype"),
    (dict(topk=0), "--dvi-topk"),
    (dict(topk=V + 1), "--dvi-topk"),
    (dict(capacity=0), "--dvi-buffer-size"),
])
def test_validation_names_the_flag(kwargs, flag):
    cfg = dict(capacity=4, store="topk", topk=K, logits_dtype="float16")
    with pytest.raises(ValueError, match=flag):
        DVIRingBuffer(BufferConfig(**{**cfg, **kwargs}), D, V)


def test_wrong_shapes_rejected():
    full, topk = _buf("full"), _buf("topk")
    for buf in (full, topk):
        with pytest.raises(ValueError, match="z_phi"):
            buf.push(DVITrainSample(torch.randn(D), 1, torch.randn(V - 1), 1, 1, False))
        with pytest.raises(ValueError, match="hk"):
            buf.push(DVITrainSample(torch.randn(D + 1), 1, torch.randn(V), 1, 1, False))
        with pytest.raises(ValueError, match="token"):
            buf.push(DVITrainSample(torch.randn(D), V, torch.randn(V), 1, 1, False))
    assert len(full) == 0 and len(topk) == 0


def test_topk_path_never_builds_dense_vocab_tensor():
    buf = _buf("topk", dtype=torch.float32)
    z = torch.randn(V)
    draft_logits = torch.randn(B, V, requires_grad=True)  # inputs made outside the recorder
    with ShapeRecorder() as rec:
        for t in range(8):
            buf.push(DVITrainSample(torch.randn(D), t, z, 1, 1, False))
        s = buf.sample(B)
    assert rec.shapes and not rec.dense(), rec.dense()
    g = draft_logits.gather(1, s.z_idx)
    with ShapeRecorder() as rec:
        loss = L.kd_forward_kl_topk(g, s.z_val, 2.0) + L.kd_reverse_kl_topk(g, s.z_val, 2.0)
    assert rec.shapes and not rec.dense(), rec.dense()
    assert torch.isfinite(loss)


def test_dense_detector_fires_on_full_path():
    buf = _buf("full", dtype=torch.float32)
    z = torch.randn(V)
    with ShapeRecorder() as rec:
        buf.push(DVITrainSample(torch.randn(D), 0, z, 1, 1, False))
    assert rec.dense()
    with ShapeRecorder() as rec:
        s = buf.sample(1)
    assert rec.dense()
    with ShapeRecorder() as rec:
        L.kd_forward_kl_full(torch.randn(B, V), torch.randn(B, V), 1.0)
    assert rec.dense()
    assert s.z_phi.shape == (1, V)


def test_segments_are_allocated_only_with_a_window_and_kept_right_aligned():
    plain, seg = ring(4, 8, 20, "topk", 4), ring(4, 8, 20, "topk", 4, segment_window=3)
    assert seg.bytes_per_slot() == plain.bytes_per_slot() + 3 * 8 * 2 + 2 + 4  # rows fp16, count int16, pos int32
    rows = torch.arange(16, dtype=torch.float16).view(2, 8)
    seg.push(DVITrainSample(torch.zeros(8), 3, torch.randn(20), 1, 1, False, seg_h=rows, seg_pos=7))
    seg.push(DVITrainSample(torch.zeros(8), 4, torch.randn(20), 1, 1, False, seg_h=rows.repeat(2, 1)[:3], seg_pos=2))
    b = seg.sample(2)
    short = int((b.token == 3).nonzero())
    assert b.seg_h.shape == (2, 3, 8) and b.seg_h.dtype == torch.float16
    assert b.seg_len[short] == 2 and b.seg_pos[short] == 7 and not b.seg_h[short, 0].any()
    assert torch.equal(b.seg_h[short, 1:], rows) and b.seg_len[1 - short] == 3 and b.seg_pos[1 - short] == 2
    plain.push(DVITrainSample(torch.zeros(8), 3, torch.randn(20), 1, 1, False, seg_h=rows))  # no window: not kept
    assert plain.sample(1).seg_h is None


@pytest.mark.parametrize("seg_h", [None, torch.zeros(4, 8), torch.zeros(0, 8), torch.zeros(2, 7)])
def test_segment_of_the_wrong_shape_is_refused(seg_h):
    buf = ring(4, 8, 20, "topk", 4, segment_window=3)
    with pytest.raises(ValueError, match=r"seg_h must have shape \[1..3, 8\]"):
        buf.push(DVITrainSample(torch.zeros(8), 3, torch.randn(20), 1, 1, False, seg_h=seg_h))
    assert buf.size == 0


def _same_batches(a, b, n):
    sa, sb = a.sample(n), b.sample(n)
    assert all(torch.equal(getattr(sa, f), getattr(sb, f)) for f in ("hk", "token", "reward", "pos", "z_idx", "z_val"))


@pytest.mark.parametrize("pushes", [3, 8, 19])  # part full, full, wrapped twice (slots pushed again while deferred)
def test_deferred_topk_samples_what_an_eager_push_writes(pushes):
    eager, deferred = _buf("topk", cap=8), ring(8, D, V, "topk", K, torch.float16, seed=0, defer_topk=True)
    for t in range(pushes):
        torch.manual_seed(t)
        _push(eager, t)
        torch.manual_seed(t)
        _push(deferred, t)
    assert deferred.size == eager.size and len(deferred._pending) == pushes  # nothing taken yet: the decode side
    _same_batches(eager, deferred, min(pushes, 8))
    assert not deferred._pending
    assert torch.equal(deferred.z_idx, eager.z_idx) and torch.equal(deferred.z_val, eager.z_val)


def test_deferred_rows_are_bounded(monkeypatch):
    import dvi.buffer

    monkeypatch.setattr(dvi.buffer, "MAX_DEFERRED", 4)
    eager, deferred = _buf("topk", cap=8), ring(8, D, V, "topk", K, torch.float16, seed=0, defer_topk=True)
    for t in range(11):
        torch.manual_seed(t)
        _push(eager, t)
        torch.manual_seed(t)
        _push(deferred, t)
        assert len(deferred._pending) <= 4  # past the bound, push takes the top-K itself
    _same_batches(eager, deferred, 8)
