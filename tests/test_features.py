import json

import numpy as np
import pandas as pd
import pytest
from feature_reference import reference_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from intraday.config import FeatureSettings, load_settings
from intraday.data import synth_market
from intraday.features import (
    KINDS,
    REGISTRY,
    RING,
    FeaturePipeline,
    Indicator,
    Kind,
    _push,
    _ring_push,
    adaptive,
    calendar,
    indicators_from_settings,
    register,
    ring_size,
    session_vwap,
)

FS = FeatureSettings(amihud=[60])  # every kind: the defaults leave Amihud out (it follows the price level)
PIPE = FeaturePipeline.from_settings(FS)


@pytest.fixture(scope="module")
def bars100k():
    return synth_market(days=100_000 / 1440, seed=21)


@pytest.fixture(scope="module")
def feats100k(bars100k):
    return PIPE.transform(bars100k)


def test_every_feature_matches_its_textbook_definition(bars100k, feats100k):
    "Each indicator against a plain pandas implementation of its definition (rolling/ewm, Wilder, OLS)."
    ref = reference_features(bars100k, FS)
    assert sorted(ref.columns) == sorted(PIPE.names)
    for name in PIPE.names:
        a, b = feats100k[name].to_numpy(), ref[name].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=name)


def test_batch_stream_parity_over_100k_bars(bars100k, feats100k):
    "Streaming bar by bar gives the batch rows: max abs difference <= 1e-9 for every feature."
    stream = PIPE.stream()
    ts = bars100k.index.as_unit("ns").asi8 // 10**9
    vals = bars100k.to_numpy()
    rows = np.array([stream.update_values(float(t), *v) for t, v in zip(ts, vals, strict=True)])
    batch = feats100k.to_numpy()
    assert np.array_equal(np.isnan(rows), np.isnan(batch))
    diff = np.nan_to_num(np.abs(rows - batch))
    worst = dict(zip(PIPE.names, diff.max(axis=0), strict=True))
    assert max(worst.values()) <= 1e-9, worst


def test_stream_accepts_rows_dicts_and_tuples(bars100k, feats100k):
    a, b, c = PIPE.stream(), PIPE.stream(), PIPE.stream()
    for ts, row in bars100k.iloc[:300].iterrows():
        ra = a.update(row)
        rb = b.update({"ts": ts, **row.to_dict()})
        rc = c.update((ts, *row.to_numpy()))
    expect = feats100k.iloc[299].to_numpy()
    for r in (ra, rb, rc):
        np.testing.assert_allclose(r, expect, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="not after the previous bar"):
        a.update(bars100k.iloc[5])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 2998), scale=st.floats(0.5, 2.0), drop=st.booleans(), seed=st.integers(0, 10**6))
def test_causality_future_bars_never_change_the_past(cut, scale, drop, seed):
    "Changing or removing every bar after t leaves all rows <= t unchanged."
    bars = SMALL
    full = SMALL_FEATS
    if drop:
        other = bars.iloc[: cut + 1]
    else:
        rng = np.random.default_rng(seed)
        other = bars.copy()
        noise = rng.uniform(0.5, 2.0, (len(bars) - cut - 1, 1))
        other.iloc[cut + 1 :, :4] = other.iloc[cut + 1 :, :4].to_numpy() * noise * scale
        other.iloc[cut + 1 :, 4] = other.iloc[cut + 1 :, 4].to_numpy() * rng.uniform(0, 3, len(bars) - cut - 1)
        other.iloc[cut + 1 :, 1] = other.iloc[cut + 1 :, :4].max(axis=1)
        other.iloc[cut + 1 :, 2] = other.iloc[cut + 1 :, :4].min(axis=1)
    got = PIPE.transform(other).iloc[: cut + 1].to_numpy()
    assert np.array_equal(got, full.iloc[: cut + 1].to_numpy(), equal_nan=True)


SMALL = synth_market(days=3000 / 1440, seed=4)
SMALL_FEATS = PIPE.transform(SMALL)


def test_a_leaky_feature_would_fail_the_causality_check():
    "Positive control: a feature computed with shift(-1) changes when the future changes."
    leaky = lambda b: np.log(b.close).diff().shift(-1)  # noqa: E731
    changed = SMALL.copy()
    changed.iloc[1001:, 3] *= 1.01
    assert not np.allclose(leaky(SMALL).iloc[:1001], leaky(changed).iloc[:1001], equal_nan=True)


WARMUP_CASES = [REGISTRY[name](20) for name in sorted(REGISTRY)] + [
    adaptive(30, 10, 120),
    adaptive(40, 5, 25),
    calendar(),
]


@pytest.mark.parametrize("ind", WARMUP_CASES, ids=[i.outputs[0] for i in WARMUP_CASES])
def test_declared_warmup_is_the_leading_nan_run(ind):
    "Every window kind: its declared warm-up is exactly its run of leading NaN rows, and none come after."
    name = ind.kind
    f = FeaturePipeline([ind]).transform(SMALL)
    first_valid = f.notna().all(axis=1).to_numpy().argmax()
    assert first_valid == ind.warmup, (name, first_valid, ind.warmup)
    assert f.iloc[first_valid:].notna().all(axis=None)


def test_degenerate_bars_give_finite_defined_values():
    "Flat prices and zero volume: no division by zero, no inf; RSI 50, efficiency 0, z-scores 0."
    ts = pd.date_range("2024-01-01", periods=400, freq="1min", tz="UTC", name="ts")
    flat = pd.DataFrame({"open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 0.0}, index=ts)
    f = PIPE.transform(flat).iloc[200:]
    assert np.isfinite(f.drop(columns=["vwap_session"]).to_numpy()).all()
    assert (f.rsi_14 == 50).all() and (f.er_30 == 0).all() and (f.volz_60 == 0).all() and (f.kyle_60 == 0).all()


def test_fit_uses_training_bars_only_and_round_trips(bars100k):
    train = bars100k.iloc[:20_000]
    pipe = FeaturePipeline.from_settings(FS).fit(train)
    later = bars100k.copy()
    later.iloc[20_000:, :4] *= 3.0
    again = FeaturePipeline.from_settings(FS).fit(later.iloc[:20_000])
    assert pipe.stats == again.stats
    z = pipe.normalize(pipe.transform(train)[pipe.warmup :])
    assert np.abs(np.nanmean(z, axis=0)).max() < 0.1 and np.nanmax(np.abs(z)) <= pipe.clip
    d = json.loads(json.dumps(pipe.to_dict()))  # plain data, ready for a manifest
    back = FeaturePipeline.from_dict(d)
    assert back.names == pipe.names and back.warmup == pipe.warmup and back.stats == pipe.stats
    assert "fitted" in repr(back)


def test_fit_and_normalize_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        FeaturePipeline.from_settings(FS).normalize(np.zeros((1, 25)))
    with pytest.raises(ValueError, match="more than the warm-up"):
        FeaturePipeline.from_settings(FS).fit(SMALL.iloc[:100])
    with pytest.raises(ValueError, match="duplicate feature names"):
        FeaturePipeline([calendar(), calendar()])


def test_settings_choose_the_indicators(monkeypatch):
    monkeypatch.setenv("INTRADAY__FEATURES__RETURNS", "2,3")
    monkeypatch.setenv("INTRADAY__FEATURES__ADAPTIVE", "")
    monkeypatch.setenv("INTRADAY__FEATURES__CALENDAR", "false")
    fs = load_settings().features
    names = [n for i in indicators_from_settings(fs) for n in i.outputs]
    assert names[:2] == ["ret_2", "ret_3"] and "tod_sin" not in names and "er_30" not in names
    with pytest.raises(ValueError, match="features.adaptive"):
        load_settings(features={"adaptive": "1,2"})
    with pytest.raises(ValueError, match="features.realized_vol"):
        load_settings(features={"realized_vol": "1"})
    with pytest.raises(ValueError, match="features.ema"):
        load_settings(features={"ema": "0"})


def test_long_histories_use_the_threaded_path():
    bars = synth_market(days=50_000 / 1440, seed=2)
    pipe = FeaturePipeline.from_settings(FS)
    threaded = pipe.transform(bars)  # 50k bars x 19 indicators: above the threading threshold
    stream = pipe.stream()
    last = [stream.update(b) for b in bars.iloc[:1600].itertuples(name=None)][-1]
    np.testing.assert_allclose(last, threaded.iloc[1599].to_numpy(), rtol=0, atol=1e-9)
    serial = pipe.transform(bars.iloc[:1600])  # below the threshold: one thread, same numbers
    np.testing.assert_array_equal(serial.to_numpy(), threaded.iloc[:1600].to_numpy())


def stream_rows(pipe: FeaturePipeline, bars: pd.DataFrame) -> np.ndarray:
    "Every row of `bars` through a fresh stream."
    stream = pipe.stream()
    ts = bars.index.as_unit("ns").asi8 / 1e9
    return np.array([stream.update_values(t, *row) for t, row in zip(ts, bars.to_numpy(), strict=True)])


@settings(max_examples=30, deadline=None)
@given(
    windows=st.lists(st.integers(2, 70), min_size=3, max_size=3),
    length=st.integers(0, 400),
    flat=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_batch_and_stream_kernels_agree_on_random_settings(windows, length, flat, seed):
    "Referee of the two implementations: any windows, short histories (shorter than the windows), flat stretches."
    a, b, c = windows
    inds = [REGISTRY[name](w) for name, w in zip(sorted(REGISTRY), [a, b, c] * 4, strict=False)]
    inds += [adaptive(a, min(b, c), max(b, c) + 1), calendar(), session_vwap(60)]
    pipe = FeaturePipeline(inds)
    bars = synth_market(days=1, seed=seed % 1000, start="2024-03-01 22:13").iloc[:length]
    if flat and length > 10:
        bars.iloc[length // 3 :, :4] = bars.close.iloc[length // 3]  # a flat stretch: zero returns and ranges
    batch = pipe.transform(bars).to_numpy()
    rows = stream_rows(pipe, bars).reshape(length, len(pipe.names))
    assert np.array_equal(np.isnan(rows), np.isnan(batch))
    np.testing.assert_allclose(rows, batch, rtol=0, atol=1e-9)


def test_a_flat_stretch_after_trading_gives_exact_defined_values():
    "A window holding only zeros has sums of exactly 0 at once, not the residue of the values that left it."
    bars = synth_market(days=1, seed=4).iloc[:900].copy()
    bars.iloc[400:, :4] = bars.close.iloc[399]  # the price freezes and nothing trades
    bars.iloc[400:, 4] = 0.0
    batch = PIPE.transform(bars)
    stream = pd.DataFrame(stream_rows(PIPE, bars), index=bars.index, columns=PIPE.names)
    # first row whose window holds only the frozen market (window length after bar 400, plus one)
    first = {"rv_30": 431, "parkinson_30": 431, "gk_30": 431, "er_30": 431, "amihud_60": 461, "volz_60": 461,
             "kyle_60": 461, "volregime_10_120": 521}  # fmt: skip
    for name, row in first.items():
        for got in (batch[name].iloc[row:], stream[name].iloc[row:]):
            assert (got == 0.0).all(), (name, got.abs().max())


def test_a_saved_pipeline_is_rebuilt_by_this_version_and_checked():
    "from_dict never trusts the file's state layout (kernels write without bounds checks) and refuses changed features."
    d = json.loads(json.dumps(PIPE.to_dict()))
    for ind in d["indicators"]:
        ind["state"] = 1  # a layout from another version: ignored, this version's is used
    back = FeaturePipeline.from_dict(d)
    assert [i.state for i in back.indicators] == [i.state for i in PIPE.indicators]
    bars = synth_market(days=2, seed=8)
    np.testing.assert_array_equal(back.transform(bars).to_numpy(), PIPE.transform(bars).to_numpy())
    changed = json.loads(json.dumps(PIPE.to_dict()))
    changed["indicators"][0]["warmup"] = 7
    with pytest.raises(ValueError, match=r"saved feature returns\(1,\) does not match"):
        FeaturePipeline.from_dict(changed)
    changed["indicators"][0]["kind"] = "astrology"
    with pytest.raises(ValueError, match="unknown feature kind 'astrology'"):
        FeaturePipeline.from_dict(changed)


@njit(cache=True)
def _k_range_mean(st, at, prm, p, ts, o, h, lo, c, v, out, row, col):
    n = int(prm[p])
    _ring_push(st, at, n, h - lo)
    out[row, col] = st[at + RING.sum] / n if st[at + RING.count] >= n else np.nan


@njit(cache=True)
def _b_range_mean(prm, p, ts, o, h, lo, c, v, r1, out, col):
    n = int(prm[p])
    buf, w, s, q, z = np.empty(n), 0, 0.0, 0.0, 0
    for t in range(c.shape[0]):
        w, s, q, z = _push(buf, t, w, s, q, z, h[t] - lo[t])
        out[t, col] = s / n if t + 1 >= n else np.nan


def range_mean(n: int) -> Indicator:
    return Indicator("range_mean", (n,), (f"range_mean_{n}",), ring_size(n), n - 1)


def test_an_indicator_registered_outside_the_module_joins_batch_and_stream():
    "Adding an indicator is one registration: the pipeline runs it both ways (uncached dispatcher), beside the others."
    with pytest.raises(ValueError, match="taken by"):
        register(Kind("range_mean", KINDS["returns"].code, range_mean, _k_range_mean, _b_range_mean))
    register(Kind("range_mean", 50, range_mean, _k_range_mean, _b_range_mean, settings=lambda fs, tf: []))
    try:
        with pytest.raises(ValueError, match="taken by"):
            register(Kind("range_mean", 51, range_mean, _k_range_mean, _b_range_mean))
        pipe = FeaturePipeline([range_mean(7), *PIPE.indicators[:3]])
        batch = pipe.transform(SMALL)
        np.testing.assert_allclose(batch.range_mean_7, (SMALL.high - SMALL.low).rolling(7).mean(), rtol=1e-12)
        np.testing.assert_array_equal(batch.iloc[:, 1:].to_numpy(), SMALL_FEATS.iloc[:, :3].to_numpy())
        rows = stream_rows(pipe, SMALL.iloc[:500])
        np.testing.assert_allclose(rows, batch.iloc[:500].to_numpy(), rtol=0, atol=1e-12)
        assert indicators_from_settings(FS) == PIPE.indicators  # its settings ask for none
    finally:
        del KINDS["range_mean"]
    with pytest.raises(ValueError, match=r"indicator kinds \['range_mean'\] are not registered"):
        FeaturePipeline([range_mean(7)])
