"""MetricsLogger: CSV contents for hand-made blocks, aggregates by hand, summary cadence, per-source table, plot,
fresh files."""
import csv

import pytest

from dvi.heldout_eval import HeldoutRow
from dvi.metrics import TRAIN_COLS, MetricsLogger, read_acceptance_csv
from dvi.progress_plot import progress_figure
from common.errors import UserError

TOP1 = "top1_agree\n(over probed blocks)"


@pytest.fixture
def no_plot(monkeypatch):
    """close() without rendering (0.5 s a plot on a busy CPU); the plot has its own tests."""
    monkeypatch.setattr(MetricsLogger, "plot", lambda self, png_path=None: None)


# (step, drafted, accepted, committed, wall_ms, top1_agree, source); block 2 had no self candidate (n-gram): top1
# None
BLOCKS = [(1, 3, 1, 2, 20.0, True, "self"), (2, 5, 5, 6, 30.0, None, "ngram"), (3, 2, 0, 1, 10.0, False, "self"),
          (4, 4, 2, 3, 40.0, True, "self")]


def logger(tmp_path, every=1000, ar=10.0, lines=None, blocks=BLOCKS):
    lg = MetricsLogger(tmp_path / "m", max_k=5, ar_ms_per_token=ar, every=every,
                       print_fn=(lines.append if lines is not None else print))
    return logger_blocks(lg, blocks)


def logger_blocks(lg, blocks):
    for step, d, a, c, wall, top1, source in blocks:
        lg.log_block(step, d, a, c, wall, drafter_ms=wall / 2, verifier_ms=wall / 4, top1_agree=top1, source=source)
    return lg


def raw(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_acceptance_csv(tmp_path, no_plot):
    lg = logger(tmp_path)
    rows = raw(tmp_path / "m" / "acceptance.csv")  # readable while the run is live: flushed per block
    assert rows[0] == ["step", "acc@1", "acc@2", "acc@3", "acc@4", "acc@5", "block_acc", "drafted", "accepted",
                       "committed", "top1_agree", "source"]
    assert rows[1] == ["1", "1", "0", "0", "", "", "0.333333", "3", "1", "2", "1", "self"]
    assert rows[2] == ["2", "1", "1", "1", "1", "1", "1", "5", "5", "6", "", "ngram"]  # no candidate: empty, not 0
    assert rows[3] == ["3", "0", "0", "", "", "", "0", "2", "0", "1", "0", "self"]
    parsed = read_acceptance_csv(tmp_path / "m" / "acceptance.csv")
    assert parsed[0] == {"step": 1, "acc@1": 1, "acc@2": 0, "acc@3": 0, "acc@4": None, "acc@5": None,
                         "block_acc": pytest.approx(1 / 3, abs=1e-6), "drafted": 3, "accepted": 1, "committed": 2,
                         "top1_agree": 1, "source": "self"}
    assert parsed[1]["top1_agree"] is None and parsed[2]["top1_agree"] == 0
    assert len(parsed) == 4 and parsed[3]["acc@4"] == 0 and parsed[3]["acc@5"] is None
    lg.close()


def test_speed_csv_and_no_calibration(tmp_path, no_plot):
    logger(tmp_path).close()
    rows = raw(tmp_path / "m" / "speed.csv")
    assert rows[0] == ["step", "wall_ms", "speedup", "drafter_ms", "verifier_ms", "trainer_ms", "committed",
                       "decode_ms", "bg_trainer_ms", "lora_version", "source"]
    assert rows[1] == ["1", "20", "1", "10", "5", "0", "2", "20", "0", "", "self"]  # 2 tokens * 10 ms / 20 ms
    assert rows[2][2] == "2" and rows[4][2] == "0.75"               # 6*10/30, 3*10/40
    logger(tmp_path, ar=None).close()
    assert [r[2] for r in raw(tmp_path / "m" / "speed.csv")[1:]] == ["", "", "", ""]


def test_rolling_and_first_last(tmp_path, no_plot):
    lg = logger(tmp_path)
    r = lg.rolling(2)  # blocks 3 and 4
    assert r["blocks"] == 2 and r["step"] == 4
    assert r["acc@1"] == pytest.approx(0.5) and r["mean_accepted"] == pytest.approx(2.0)
    assert r["block_acc"] == pytest.approx((0 + 0.5) / 2) and r["speedup"] == pytest.approx(4 * 10 / 50)
    assert r["top1_agree"] == pytest.approx(0.5)  # blocks 3 (no) and 4 (yes)
    fl = lg.first_last(2)
    assert fl["first"]["top1_agree"] == 1.0       # block 1 only: block 2 has no candidate, not counted as 0
    assert lg.rolling()["top1_agree"] == pytest.approx(2 / 3)
    assert fl["first"]["acc@1"] == 1.0 and fl["first"]["mean_accepted"] == pytest.approx(4.0)
    assert fl["first"]["block_acc"] == pytest.approx((1 / 3 + 1) / 2) and fl["last"] == r
    assert lg.rolling()["blocks"] == 4 and lg.rolling()["mean_accepted"] == pytest.approx(3.0)
    empty = MetricsLogger(tmp_path / "e", max_k=2, print_fn=lambda s: None)
    assert empty.rolling() == {"blocks": 0, "step": None, "acc@1": None, "mean_accepted": None, "block_acc": None,
                               "top1_agree": None, "speedup": None}
    lg.close(), empty.close()


def test_summary_every_n_blocks_with_trainer(tmp_path, no_plot):
    lines = []
    lg = logger(tmp_path, every=2, lines=lines, blocks=BLOCKS[:1])
    lg.log_train(1, {"loss": 9.0, "kd": 9.0, "ms": 99.0})
    logger_blocks(lg, BLOCKS[1:2])
    assert lines == ["[dvi] step 2 | last 2 blocks: acc@1 1.00 mean accepted 4.00 block_acc 0.67 top1_agree 1.00 "
                     "speedup 1.60x | sources: self 50% x2.00, ngram 50% x6.00 | trainer loss 9.00 kd 9 "
                     "(99.0 ms/step, 1 steps)"]
    lg.log_train(3, {"loss": 1.0, "kd": 0.5, "ms": 10.0})
    lg.log_train(4, {"loss": 2.0, "kd": 0.7, "ms": 14.0})
    for step, d, a, c, wall, top1, _ in BLOCKS[2:]:
        lg.log_block(step, d, a, c, wall, 1.0, 1.0, trainer_ms=12.0, top1_agree=top1)  # no source: no breakdown
    assert len(lines) == 2
    assert lines[1] == ("[dvi] step 4 | last 2 blocks: acc@1 0.50 mean accepted 2.00 block_acc 0.25 top1_agree 0.50 "
                        "speedup 0.80x | trainer loss 1.50 kd 0.6 (12.0 ms/step, 2 steps)")
    lg.close()


def test_trainer_csv(tmp_path, no_plot):
    lg = logger(tmp_path)
    assert not (tmp_path / "m" / "trainer.csv").exists()  # offline runs leave no empty trainer file
    lg.log_train(7, {"loss": 1.25, "kd": 0.5, "ms": 3.5, "over_budget": True, "n_pg": 4})
    rows = raw(tmp_path / "m" / "trainer.csv")
    assert rows[0] == list(TRAIN_COLS) == ["step", "loss", "kd", "rkl", "kd_top1", "ce", "pg", "entropy", "w_kl",
                                            "w_ce", "w_pg", "reward_mean", "baseline", "ms", "over_budget",
                                            "feature_loss", "feature_kd", "feature_kd_top1", "feature_ms"]
    assert rows[1] == ["7", "1.25", "0.5", "", "", "", "", "", "", "", "", "", "", "3.5", "1", "", "", "", ""]
    lg.close()


@pytest.mark.parametrize("with_trainer", [False, True])
def test_plot_writes_png(tmp_path, with_trainer):
    lg = logger(tmp_path, blocks=BLOCKS[:3])
    if with_trainer:
        lg.log_train(2, {"loss": 1.0, "kd": 0.5, "ce": 0.2, "pg": 0.0})
        lg.log_train(3, {"loss": 0.8, "kd": 0.4})
    lg.close()
    png = (tmp_path / "m" / "dvi_progress.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    empty = MetricsLogger(tmp_path / "e", max_k=2, print_fn=lambda s: None)
    assert empty.plot(tmp_path / "x" / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_new_logger_starts_fresh_and_keeps_old_files(tmp_path):
    lines = []
    logger(tmp_path, lines=lines).close()
    old = (tmp_path / "m" / "acceptance.csv").read_bytes()
    lg = MetricsLogger(tmp_path / "m", max_k=5, print_fn=lines.append)
    assert len(raw(tmp_path / "m" / "acceptance.csv")) == 1
    prev = [p for p in (tmp_path / "m").iterdir() if p.name.startswith("previous_")]
    assert len(prev) == 1 and (prev[0] / "acceptance.csv").read_bytes() == old
    assert (prev[0] / "dvi_progress.png").exists() and "moved the previous run's files" in lines[-1]
    lg.close()


def test_bad_input(tmp_path, no_plot):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file: pass a folder"):
        MetricsLogger(tmp_path / "f", max_k=3)
    lg = MetricsLogger(tmp_path / "m", max_k=3, print_fn=lambda s: None)
    with pytest.raises(ValueError, match="accepted"):
        lg.log_block(1, 2, 3, 4, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="max_k"):
        lg.log_block(1, 4, 1, 2, 1.0, 0.5, 0.5)
    lg.close()
    with pytest.raises(UserError, match="does not exist"):
        read_acceptance_csv(tmp_path / "nope.csv")


def test_sources_csv_counts_each_source(tmp_path, no_plot):
    """Per source: its blocks and their share, tokens per pass, the drafters asked (a chain's asked_ms), the time."""
    lg = MetricsLogger(tmp_path / "m", max_k=5, ar_ms_per_token=10.0, print_fn=lambda s: None)
    lg.log_block(1, 3, 2, 3, 20.0, 4.0, 16.0, source="ngram", asked_ms={"ngram": 4.0})
    lg.log_block(2, 2, 0, 1, 30.0, 10.0, 20.0, source="self", asked_ms={"ngram": 1.0, "memory": 2.0, "self": 7.0})
    lg.log_block(3, 0, 0, 1, 12.0, 2.0, 10.0, source="none", asked_ms={"ngram": 0.5, "memory": 1.5})
    lg.log_block(4, 1, 1, 2, 10.0, 2.0, 8.0, source="ngram")  # a lone drafter: it was asked, for drafter_ms
    lg.close()
    rows = {r["source"]: r for r in read_acceptance_csv(tmp_path / "m" / "sources.csv")}
    assert list(rows) == ["ngram", "memory", "self", "none"]  # first seen first (asked in chain order)
    ng, sf, mem, none = rows["ngram"], rows["self"], rows["memory"], rows["none"]
    assert (ng["calls"], ng["blocks"], ng["drafted"], ng["accepted"], ng["committed"]) == (4, 2, 4, 3, 5)
    assert ng["draft_ms"] == pytest.approx(7.5) and ng["verify_ms"] == pytest.approx(24.0)
    assert ng["block_share"] == 0.5 and ng["committed_per_pass"] == 2.5
    assert (mem["calls"], mem["blocks"], mem["draft_ms"], mem["committed_per_pass"]) == (2, 0, 3.5, None)
    assert (sf["calls"], sf["blocks"], sf["committed"]) == (1, 1, 1)
    assert (none["calls"], none["blocks"], none["committed_per_pass"]) == (0, 1, 1)
    total = 7.5 + 24.0 + 7.0 + 20.0 + 3.5 + 10.0
    assert ng["time_share"] == pytest.approx(31.5 / total, abs=1e-5)
    assert sum(r["time_share"] for r in rows.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(r["block_share"] for r in rows.values()) == pytest.approx(1.0)
    no_source = logger(tmp_path / "x", blocks=[b[:6] + (None,) for b in BLOCKS])
    no_source.close()
    assert not (tmp_path / "x" / "m" / "sources.csv").exists()


def test_plot_shows_every_curve_with_a_legend_outside_the_axes(tmp_path):
    """acceptance (with top1_agree), tokens per pass and tokens/s vs greedy, losses: every curve is in a legend,
    and every legend lies right of its axes, over no curve."""
    blocks = [(i, 2, i % 3 // 2 * 2, 1 + i % 3 // 2 * 2, 10.0, None if i % 4 == 0 else i % 2 == 0, "self")
              for i in range(1, 120)]
    train = [(i, 1.0 / i, 0.5 / i, None, None) for i in range(1, 30)]
    heldout = [HeldoutRow(i, i // 4, d, 0.1 + i / 400, i / 100, 512, 1.0) for i in (1, 40, 80, 119)
               for d in ("self", "f")]
    fig = progress_figure(blocks, train, ("loss", "kd", "ce", "pg"), ar_ms=8.0, window=10, heldout=heldout)
    fig.canvas.draw()
    labels = []
    for ax in fig.axes:
        curves = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        legend = ax.get_legend()
        assert legend is not None and [t.get_text() for t in legend.get_texts()] == curves
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
        labels += curves
    assert {"acc@1", "block_acc", TOP1, "loss", "kd", "self: held-out top-1 agreement", "f: held-out accepted length"} \
        <= set(labels)
    held = next(ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "f: held-out top-1 agreement")
    assert list(held.get_xdata()) == [1, 40, 80, 119] and held.get_ydata()[-1] == pytest.approx(0.1 + 119 / 400)
    assert any("tokens/s vs greedy" in x for x in labels) and any("tokens per pass" in x for x in labels)
    speed = next(ln for ax in fig.axes for ln in ax.get_lines() if "tokens/s vs greedy" in ln.get_label())
    assert speed.get_ydata()[-1] == pytest.approx(sum(c for *_, c, _, _, _ in blocks[-10:]) * 8.0 / 100.0)
    top1 = next(ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == TOP1)
    judged = [b[5] for b in blocks[-10:] if b[5] is not None]
    assert top1.get_ydata()[-1] == pytest.approx(sum(judged) / len(judged))  # blocks without one not counted
