import pytest

from dvi.schedule import PiecewiseSchedule


def _w(s, step):
    s.set_step(step)
    return s.weights()


def test_piecewise_values():
    s = PiecewiseSchedule(warmup=10, kl0=1.0, klmin=0.2, pgmax=0.5, ramp=4, ce_max=2.0)
    assert s.step == 0
    assert _w(s, 0) == {"kl": 1.0, "ce": 0.0, "pg": 0.0}
    assert _w(s, 9) == {"kl": 1.0, "ce": 0.0, "pg": 0.0}
    assert _w(s, 10) == {"kl": 1.0, "ce": 0.0, "pg": 0.0}  # ramp starts from the warm-up values
    assert _w(s, 11) == pytest.approx({"kl": 0.8, "ce": 0.5, "pg": 0.125})
    assert _w(s, 12) == pytest.approx({"kl": 0.6, "ce": 1.0, "pg": 0.25})
    assert _w(s, 14) == pytest.approx({"kl": 0.2, "ce": 2.0, "pg": 0.5})
    assert _w(s, 10_000) == pytest.approx({"kl": 0.2, "ce": 2.0, "pg": 0.5})


def test_default_ramp_is_warmup_and_at_least_one():
    s = PiecewiseSchedule(warmup=6, kl0=1.0, klmin=0.0, pgmax=1.0)
    assert s.ramp == 6 and _w(s, 9) == pytest.approx({"kl": 0.5, "ce": 0.5, "pg": 0.5})
    s = PiecewiseSchedule(warmup=0, kl0=1.0, klmin=0.5, pgmax=1.0)
    assert s.ramp == 1 and _w(s, 0) == {"kl": 1.0, "ce": 0.0, "pg": 0.0}
    assert _w(s, 1) == {"kl": 0.5, "ce": 1.0, "pg": 1.0}


def test_negative_warmup_rejected_by_its_config():
    from common.errors import ConfigError
    from dvi.config import ScheduleConfig

    with pytest.raises(ConfigError, match="--dvi-warmup-steps -1 must be >= 0"):
        ScheduleConfig(warmup=-1)


def test_state_dict_round_trip():
    a = PiecewiseSchedule(warmup=5, kl0=1.0, klmin=0.1, pgmax=0.3, ramp=7, ce_max=0.8)
    a.set_step(8)
    sd = a.state_dict()
    assert sd["step"] == 8 and sd["ramp"] == 7 and sd["ce_max"] == 0.8
    b = PiecewiseSchedule(warmup=5, kl0=1.0, klmin=0.1, pgmax=0.3, ramp=7, ce_max=0.8)
    b.load_state_dict(sd)
    assert b.step == 8 and b.weights() == a.weights() and b.state_dict() == sd


def test_load_with_changed_hparams_keeps_new_ones_and_step():
    a = PiecewiseSchedule(warmup=5, kl0=1.0, klmin=0.1, pgmax=0.3)
    a.set_step(20)
    b = PiecewiseSchedule(warmup=5, kl0=1.0, klmin=0.1, pgmax=0.9)
    with pytest.warns(UserWarning, match="pgmax"):
        b.load_state_dict(a.state_dict())
    assert b.step == 20 and b.pgmax == 0.9 and b.weights()["pg"] == 0.9
