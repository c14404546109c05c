"""The zoo of planted markets: contract, seeding, the signal from bars, IC against theory, placebos, oracles."""

import numpy as np
import pytest

from intraday.data import SynthParams, planted_ic, synth_market, validate_bars
from intraday.markets import MARKETS, REGIME, Market, make_market, targets_policy

N_DAYS = 150  # 216k one-minute bars: IC standard error ~0.0022


def t_stat(x):
    return x.mean() / (x.std(ddof=1) / np.sqrt(len(x)))


@pytest.fixture(scope="module")
def long_markets():
    return {name: make_market(name, days=N_DAYS, seed=21, truth=True) for name in MARKETS}


def test_trend_is_the_default_market_bit_for_bit():
    for seed, alpha in ((0, 0.05), (5, 0.2), (9, 0.0)):
        a = make_market("trend", days=4, seed=seed, alpha=alpha)
        assert a.equals(synth_market(days=4, seed=seed, alpha=alpha))


def test_more_than_one_chunk_continues_the_state():
    "A market longer than one simulation chunk (100k bars) is the same process: its signal replays across the seam."
    bars, hidden = make_market("regime", days=80, seed=2, truth=True)
    x = MARKETS["regime"].signal(bars).to_numpy()
    assert np.array_equal(x[:-1], hidden.signal.to_numpy()[1:])


@pytest.mark.parametrize("name", list(MARKETS))
def test_contract_seed_and_timeframe(name):
    a = make_market(name, days=3, seed=4)
    validate_bars(a)
    assert len(a) == 3 * 1440
    assert a.equals(make_market(name, days=3, seed=4))
    assert not a.equals(make_market(name, days=3, seed=5))
    b = make_market(name, days=3, seed=4, timeframe="5m")
    validate_bars(b)
    assert len(b) == 3 * 288
    x = MARKETS[name].signal(b).to_numpy()
    assert set(np.unique(x)) <= {-1.0, 0.0, 1.0}


def test_bad_input_names_the_market():
    with pytest.raises(KeyError, match="the zoo has trend, reversal"):
        make_market("momentum")
    with pytest.raises(ValueError, match="market flow: alpha must be in"):
        make_market("flow", alpha=-1.0)
    with pytest.raises(ValueError, match="market schedule: days must be > 0"):
        make_market("schedule", days=0)
    with pytest.raises(ValueError, match="less than one bar"):
        make_market("reversal", days=1e-4, timeframe="1h")


def test_placebos_share_one_martingale():
    "At alpha 0 the signal no longer enters the price: every market's placebo is the same bars."
    base = make_market("trend", days=5, seed=3, alpha=0.0)
    for name in MARKETS:
        assert make_market(name, days=5, seed=3, alpha=0.0).equals(base)


@pytest.mark.parametrize("name", list(MARKETS))
def test_signal_from_bars_and_ic_against_theory(name, long_markets):
    "The signal recomputed from the bars is the one that drove each next bar; its IC is the formula's (|z| < 4)."
    bars, hidden = long_markets[name]
    m = MARKETS[name]
    x = m.signal(bars).to_numpy()
    assert np.array_equal(x[:-1], hidden.signal.to_numpy()[1:])
    xs, e = hidden.signal.to_numpy(), hidden.shock.to_numpy()
    q = float(np.mean(xs**2))
    assert (q == 1.0) == (m.kind != REGIME)
    ic = np.corrcoef(xs, e)[0, 1]
    se = np.std(xs * e) / np.sqrt(len(e)) / (xs.std() * e.std())
    assert abs(ic - m.ic(share=q)) < 4 * se, (name, ic, m.ic(share=q), se)
    assert ic > 8 * se  # the planted edge is there, far beyond noise


@pytest.mark.parametrize("name", list(MARKETS))
def test_placebo_signal_predicts_nothing(name, long_markets):
    "On the placebo, the market's own signal-signed next return has |t| < 3.5; on the market it has t > 4."
    m = MARKETS[name]
    bars, _ = long_markets[name]
    placebo = make_market(name, days=N_DAYS, seed=21, alpha=0.0)
    for b, planted in ((placebo, False), (bars, True)):
        r = (b.close / b.open - 1).to_numpy()
        x = m.signal(b).to_numpy()
        on = x[:-1] != 0
        t = t_stat((x[:-1] * r[1:])[on])
        assert (t > 4) if planted else (abs(t) < 3.5), (name, planted, t)


def test_ic_formula():
    trend = MARKETS["trend"]
    assert trend.ic() == pytest.approx(planted_ic(0.05))
    assert trend.ic(0.2, params=SynthParams(jump_p=0.0)) == pytest.approx(0.2)
    m = Market("r", REGIME, 0.1)
    assert m.ic(share=0.25) == pytest.approx(0.1 * 0.5 / np.sqrt(1 + 5e-4 * 64 - 0.01 * 0.75))
    assert m.ic(0.0, share=0.4) == 0.0


def test_schedule_changes_sign_six_times_a_day():
    bars = make_market("schedule", days=2, seed=0)
    x = MARKETS["schedule"].signal(bars).to_numpy()
    assert int(np.sum(np.diff(x[:1440]) != 0)) == 6
    assert abs(x[:1440].mean()) < 0.01


def test_targets_policy_holds_the_nearest_action():
    pol = targets_policy([-1.0, 0.0, 1.0], np.array([1.0, -1.0, 0.0, 0.4]))
    assert pol(None, np.array([0, 1, 2, 3])).tolist() == [2, 0, 1, 1]
    long_only = targets_policy([0.0, 1.0], np.array([-1.0, 1.0]))
    assert long_only(None, np.array([0, 1])).tolist() == [0, 1]


@pytest.mark.parametrize("name", list(MARKETS))
def test_compiled_kernels_equal_their_python_source(name, monkeypatch):
    "The numba kernels run as plain Python (numba's py_func) give the same bars and signal: one definition, two runs."
    import intraday.data as kernel
    import intraday.markets as mk

    fast, fast_sig = make_market(name, days=0.5, seed=8, truth=True)
    for mod, fn in ((kernel, "_advance"), (kernel, "_signal"), (kernel, "_simulate"), (mk, "_signal_path")):
        monkeypatch.setattr(mod, fn, getattr(mod, fn).py_func)
    slow, slow_sig = make_market(name, days=0.5, seed=8, truth=True)
    np.testing.assert_allclose(slow.to_numpy(), fast.to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(slow_sig.signal.to_numpy(), fast_sig.signal.to_numpy())
    replayed = MARKETS[name].signal(slow).to_numpy()  # the signal replayed from bars, in Python
    np.testing.assert_array_equal(replayed[:-1], slow_sig.signal.to_numpy()[1:])
