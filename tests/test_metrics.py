import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intraday.metrics import (
    _TOL,
    TRADE_KEYS,
    _fifo_kernel,
    bars_per_year,
    chain_equity,
    deflated_sharpe,
    drawdown,
    expected_max_sharpe,
    expected_shortfall,
    fold_table,
    max_drawdown_duration,
    metrics_table,
    open_lots,
    performance,
    pooled,
    probabilistic_sharpe,
    round_trips,
    sharpe_ci,
    sharpe_ratio,
    sortino_ratio,
    ulcer_index,
    value_at_risk,
)

MIN = pd.date_range("2024-01-01", periods=20_000, freq="1min", tz="UTC")
N_MIN = 525_600.0  # one-minute bars per 365-day year


def curve(values, freq="1min") -> pd.Series:
    "An equity curve on a UTC minute (or `freq`) index."
    return pd.Series(
        np.asarray(values, dtype=float), index=pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC")
    )


def fill_frame(qty, price, fee=None, minutes=None) -> pd.DataFrame:
    "A fill stream stamped on consecutive (or given) minutes."
    n = len(qty)
    fee = np.zeros(n) if fee is None else fee
    idx = MIN[list(range(n)) if minutes is None else minutes]
    return pd.DataFrame(
        {"qty": np.asarray(qty, float), "price": np.asarray(price, float), "fee": np.asarray(fee, float)}, index=idx
    )


def random_equity(n, seed=0, mu=1e-4, sd=1e-3) -> pd.Series:
    "A seeded geometric random-walk equity curve of n bars."
    r = np.random.default_rng(seed).normal(mu, sd, n - 1)
    return pd.Series(1e4 * np.exp(np.r_[0.0, np.cumsum(r)]), index=MIN[:n])


# --- annualisation ---------------------------------------------------------------------------------------------------


def test_bars_per_year():
    assert bars_per_year(MIN[:100]) == N_MIN
    assert bars_per_year(pd.date_range("2024-01-01", periods=50, freq="5min", tz="UTC")) == 105_120.0
    assert bars_per_year(pd.date_range("2024-01-01", periods=50, freq="1h", tz="UTC")) == 8760.0
    assert bars_per_year(MIN[:100].delete([10, 11, 12])) == N_MIN  # gaps do not move the median
    assert math.isnan(bars_per_year(MIN[:1])) and math.isnan(bars_per_year(MIN[:0]))
    with pytest.raises(ValueError, match="increasing"):
        bars_per_year(MIN[:10][::-1])


# --- drawdowns -------------------------------------------------------------------------------------------------------

PATH = [100, 110, 99, 88, 110, 121, 108.9, 115]  # -20 % over bars 1..4 (3 bars), then -10 % from bar 5, not regained


def test_drawdown_known_path():
    d = drawdown(curve(PATH))
    assert list(d.columns) == ["peak", "drawdown", "bars_since_peak"]
    np.testing.assert_allclose(d["drawdown"], [0, 0, 0.1, 0.2, 0, 0, 0.1, 1 - 115 / 121], atol=1e-12)
    assert d["peak"].tolist() == [100, 110, 110, 110, 110, 121, 121, 121]
    assert d["bars_since_peak"].tolist() == [0, 0, 1, 2, 0, 0, 1, 2]
    p = performance(curve(PATH), n_boot=0)
    assert p["max_drawdown"] == pytest.approx(0.2)
    assert p["max_drawdown_duration"] == 3 and p["max_drawdown_duration_s"] == 180.0


def test_drawdown_duration_unrecovered_and_hourly():
    # peak at bar 1, never regained: lasts to the last bar
    assert max_drawdown_duration(curve([1, 2, 1.5, 1.8, 1.9, 1.7])) == (4, pd.Timedelta("4min"))
    assert max_drawdown_duration(curve([1, 2, 1.5, 1.8, 1.9, 1.7], freq="1h")) == (4, pd.Timedelta("4h"))
    # two drawdowns (bars 0..2, regained at the same level, then 2..6): the later, longer one wins
    assert max_drawdown_duration(curve([1, 0.9, 1.0, 0.99, 0.98, 0.97, 1.01])) == (4, pd.Timedelta("4min"))
    # rising curve: no drawdown; short curves
    assert max_drawdown_duration(curve(np.arange(1, 10))) == (0, pd.Timedelta(0))
    assert max_drawdown_duration(curve([5.0])) == (0, pd.Timedelta(0))
    # without a DatetimeIndex the elapsed time is NaT; performance then reports NaN seconds
    plain = pd.Series(PATH, dtype=float)
    assert max_drawdown_duration(plain)[0] == 3 and max_drawdown_duration(plain)[1] is pd.NaT
    p = performance(plain, periods_per_year=252, n_boot=0)
    assert p["max_drawdown_duration"] == 3 and math.isnan(p["max_drawdown_duration_s"])
    with pytest.raises(ValueError, match="periods_per_year"):
        performance(plain)


def test_ulcer_index_formula():
    dd = drawdown(curve(PATH))["drawdown"].to_numpy()
    expected = math.sqrt(sum(x * x for x in [0, 0, 0.1, 0.2, 0, 0, 0.1, 1 - 115 / 121]) / 8)
    assert ulcer_index(dd) == pytest.approx(expected, rel=1e-12)
    assert performance(curve(PATH), n_boot=0)["ulcer_index"] == pytest.approx(expected, rel=1e-12)


# --- return-based ratios ---------------------------------------------------------------------------------------------


def test_sharpe_volatility_annual_return_against_textbook():
    eq = random_equity(3000, seed=1)
    e = eq.to_numpy()
    r = np.log(e[1:] / e[:-1])
    p = performance(eq, n_boot=0)
    assert p["periods_per_year"] == N_MIN
    assert p["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(N_MIN), rel=1e-10)
    assert p["volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(N_MIN), rel=1e-10)
    assert p["total_return"] == pytest.approx(e[-1] / e[0] - 1, rel=1e-12)
    # geometric: the total growth compounded to a year of bars
    assert p["annual_return"] == pytest.approx((e[-1] / e[0]) ** (N_MIN / (len(e) - 1)) - 1, rel=1e-9)
    assert p["calmar"] == pytest.approx(p["annual_return"] / p["max_drawdown"], rel=1e-12)
    assert p["max_drawdown"] == pytest.approx(np.max(1 - e / np.maximum.accumulate(e)), rel=1e-12)
    # periods_per_year overrides the index
    assert performance(eq, n_boot=0, periods_per_year=252)["sharpe"] == pytest.approx(
        r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-10
    )


def test_sortino_downside_deviation():
    r = np.array([0.01, -0.02, 0.03, -0.01, 0.005])
    dd = math.sqrt((0.02**2 + 0.01**2) / 5)  # target 0, over all bars
    assert sortino_ratio(r, 252) == pytest.approx(r.mean() / dd * math.sqrt(252), rel=1e-12)
    eq = curve(100 * np.exp(np.r_[0.0, np.cumsum(r)]))
    assert performance(eq, periods_per_year=252, n_boot=0)["sortino"] == pytest.approx(
        r.mean() / dd * math.sqrt(252), rel=1e-9
    )
    assert math.isnan(sortino_ratio(np.array([0.01, 0.02]), 252))  # nothing below the target


def test_sharpe_ratio_small_inputs():
    assert math.isnan(sharpe_ratio(np.array([0.01]), 252))
    assert math.isnan(sharpe_ratio(np.zeros(10), 252))
    assert sharpe_ratio(np.array([0.01, 0.03]), 1) == pytest.approx(0.02 / math.sqrt(0.0002))


def test_var_es_against_numpy_quantile():
    eq = random_equity(2000, seed=2, sd=5e-3)
    e = eq.to_numpy()
    R = e[1:] / e[:-1] - 1
    p = performance(eq, n_boot=0)
    for lvl in (95, 99):
        q = np.quantile(R, 1 - lvl / 100)
        assert p[f"var_{lvl}"] == pytest.approx(-q, rel=1e-12)
        assert p[f"es_{lvl}"] == pytest.approx(-R[R <= q].mean(), rel=1e-12)
        assert p[f"es_{lvl}"] >= p[f"var_{lvl}"] > 0
    assert p["var_99"] > p["var_95"]
    R20 = np.linspace(-0.1, 0.09, 20)
    assert value_at_risk(R20, 0.95) == pytest.approx(0.0905)
    assert expected_shortfall(R20, 0.95) == pytest.approx(0.1)


# --- trades, turnover, exposure, costs -------------------------------------------------------------------------------


def test_trade_statistics_on_crafted_fills():
    # equity of 10 000 over 10 bars; buy 10 @ 100, sell 10 @ 102 (win), sell 5 @ 101, buy 5 @ 103 (loss)
    eq = curve(np.linspace(10_000, 10_010, 10))
    fills = fill_frame([10, -10, -5, 5], [100, 102, 101, 103], [0.5, 0.5, 0.25, 0.25], minutes=[1, 3, 5, 8])
    positions = pd.Series([0, 10, 10, 0, 0, -5, -5, -5, 0, 0], index=eq.index, dtype=float)
    costs = {"fee": 1.5, "spread": 2.0, "impact": 0.25}
    p = performance(eq, fills, positions, costs, n_boot=0)
    notional = 10 * 100 + 10 * 102 + 5 * 101 + 5 * 103
    assert p["turnover"] == pytest.approx(notional / eq.mean())
    assert p["annual_turnover"] == pytest.approx(notional / eq.mean() * N_MIN / 9)
    assert p["exposure"] == pytest.approx(0.5)
    assert p["n_trades"] == 4 and p["n_round_trips"] == 2
    assert p["hit_rate"] == 0.5
    pnl = [10 * 2 - 1.0, -5 * 2 - 0.5]
    assert p["avg_trade"] == pytest.approx(np.mean(pnl))
    assert p["avg_trade_return"] == pytest.approx(np.mean([pnl[0] / 1000, pnl[1] / 505]))
    assert p["profit_factor"] == pytest.approx(19 / 10.5)
    assert p["avg_holding_s"] == pytest.approx(np.mean([120, 180]))
    assert p["costs_total"] == 3.75 and p["cost_fee"] == 1.5 and p["cost_spread"] == 2.0 and p["cost_impact"] == 0.25
    # positions default to the cumulative fills at each bar; costs default to the fees of the fills
    q = performance(eq, fills, n_boot=0)
    assert q["exposure"] == pytest.approx(0.5)
    assert q["costs_total"] == pytest.approx(1.5) and q["cost_fee"] == pytest.approx(1.5)
    # without fills: trade statistics are NaN, exposure still comes from positions
    r = performance(eq, positions=positions, n_boot=0)
    assert r["exposure"] == pytest.approx(0.5)
    assert all(math.isnan(r[k]) for k in TRADE_KEYS if k != "exposure") and math.isnan(r["costs_total"])


# --- round trips ------------------------------------------------------------------------------------------------------


def test_round_trip_open_close():
    rt = round_trips(fill_frame([3, -3], [100, 110], [1.0, 2.0]))
    assert len(rt) == 1
    row = rt.iloc[0]
    assert (row.qty, row.entry_price, row.exit_price, row.fees) == (3.0, 100.0, 110.0, 3.0)
    assert row.pnl == pytest.approx(27.0) and row["return"] == pytest.approx(27 / 300)
    assert row.entry_ts == MIN[0] and row.exit_ts == MIN[1] and row.duration == pd.Timedelta("1min")
    short = round_trips(fill_frame([-2, 2], [100, 90]))
    assert short.qty.tolist() == [-2.0] and short.pnl.tolist() == [20.0] and short["return"].tolist() == [0.1]


def test_round_trip_partial_closes_and_fee_split():
    # buy 4 (fee 4), sell 1 (fee 1), sell 3 (fee 6): entry fee splits 1 + 3, exit fees stay whole
    rt = round_trips(fill_frame([4, -1, -3], [100, 101, 102], [4.0, 1.0, 6.0]))
    assert rt.qty.tolist() == [1.0, 3.0]
    np.testing.assert_allclose(rt.fees, [1.0 + 1.0, 3.0 + 6.0])
    np.testing.assert_allclose(rt.pnl, [1 - 2.0, 6 - 9.0])
    # buy 1 then 3 (two lots), sell 2: closes lot 1 in full and 1 unit of lot 2 (FIFO), 2 stay open
    fills = fill_frame([1, 3, -2], [100, 104, 106], [1.0, 3.0, 2.0])
    rt = round_trips(fills)
    assert rt.entry_price.tolist() == [100.0, 104.0] and rt.qty.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(rt.fees, [1.0 + 1.0, 1.0 + 1.0])
    lots = open_lots(fills)
    assert lots.qty.tolist() == [2.0] and lots.entry_price.tolist() == [104.0] and lots.fees.tolist() == [2.0]
    assert lots.entry_ts.tolist() == [MIN[1]]


def test_round_trip_flip_long_to_short():
    # long 2, then sell 5: closes 2 (2/5 of the fee) and opens short 3 (3/5), later covered at 95
    fills = fill_frame([2, -5, 3], [100, 105, 95], [2.0, 5.0, 3.0])
    rt = round_trips(fills)
    assert rt.qty.tolist() == [2.0, -3.0]
    assert rt.entry_ts.tolist() == [MIN[0], MIN[1]] and rt.exit_ts.tolist() == [MIN[1], MIN[2]]
    np.testing.assert_allclose(rt.fees, [2.0 + 2.0, 3.0 + 3.0])
    np.testing.assert_allclose(rt.pnl, [2 * 5 - 4.0, 3 * 10 - 6.0])
    assert len(open_lots(fills)) == 0
    # the stream ends flat: the round trips carry all of its realised PnL
    realised = -(fills.qty * fills.price).sum() - fills.fee.sum()
    assert rt.pnl.sum() == pytest.approx(realised)


def test_round_trips_edge_cases():
    assert len(round_trips(fill_frame([], []))) == 0
    assert list(round_trips(fill_frame([], []))) == list(round_trips(fill_frame([1, -1], [1, 2])))
    # open position at the end is not a round trip; zero-quantity rows are not fills (their fee is ignored)
    assert len(round_trips(fill_frame([1, 0, 2], [100, 101, 102]))) == 0
    rt = round_trips(fill_frame([1, 0, -1], [100, 101, 102], [1.0, 5.0, 1.0]))
    assert rt.fees.tolist() == [2.0] and rt.exit_ts.tolist() == [MIN[2]]
    assert performance(curve([1, 1, 1]), fill_frame([1, 0, -1], [100, 101, 102]), n_boot=0)["n_trades"] == 2
    # rounding dust does not open a phantom lot: 0.3 - 0.1 - 0.2 is flat
    fills = fill_frame([0.3, -0.1, -0.2], [100, 101, 102], [0.3, 0.1, 0.2])
    rt = round_trips(fills)
    assert len(rt) == 2 and len(open_lots(fills)) == 0
    assert rt.fees.sum() == pytest.approx(0.6, abs=1e-15)
    # no fee column: fees are zero
    rt = round_trips(fill_frame([1, -1], [100, 101]).drop(columns="fee"))
    assert rt.fees.tolist() == [0.0] and rt.pnl.tolist() == [1.0]
    # bars_held counts bars of the given index between the entry and exit fills
    rt = round_trips(fill_frame([1, -1], [100, 101], minutes=[2, 7]), index=MIN[:10])
    assert rt.bars_held.tolist() == [5]
    with pytest.raises(ValueError, match="missing column"):
        round_trips(fill_frame([1], [1]).drop(columns="qty"))
    with pytest.raises(ValueError, match="non-decreasing"):
        round_trips(fill_frame([1, -1], [1, 2], minutes=[5, 1]))
    with pytest.raises(ValueError, match="non-finite"):
        round_trips(fill_frame([1, np.nan], [1, 2]))


quantities = st.one_of(  # a fill has a quantity (zero rows are not fills: see test_round_trips_edge_cases)
    st.integers(-5, 5).map(float),
    st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 3)),
).filter(lambda q: q != 0)
streams = st.lists(
    st.tuples(quantities, st.floats(1, 1000), st.floats(0, 5)),
    min_size=0,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(stream=streams, mark=st.floats(1, 1000))
def test_realised_plus_unrealised_equals_stream_pnl(stream, mark):
    qty, price, fee = (np.array(c, dtype=float) for c in zip(*stream)) if stream else (np.zeros(0),) * 3
    fills = fill_frame(qty, price, fee)
    rt, lots = round_trips(fills), open_lots(fills)
    unrealised = float((lots.qty * (mark - lots.entry_price)).sum() - lots.fees.sum())
    stream_pnl = float(-(qty * price).sum() - fee.sum() + qty.sum() * mark)
    scale = 1 + float(np.abs(qty) @ price + fee.sum() + np.abs(qty).sum() * mark)
    assert rt.pnl.sum() + unrealised == pytest.approx(stream_pnl, abs=1e-9 * scale)
    assert rt.fees.sum() + lots.fees.sum() == pytest.approx(fee.sum(), abs=1e-9 * (1 + fee.sum()))
    assert lots.qty.sum() == pytest.approx(qty.sum(), abs=1e-9 * (1 + np.abs(qty).sum()))
    assert (np.sign(lots.qty) == np.sign(qty.sum())).all()  # open lots all sit on the side of the position
    assert (rt.qty != 0).all() and (rt.fees >= -1e-12).all() and (rt.exit_ts >= rt.entry_ts).all()


@settings(max_examples=100, deadline=None)
@given(stream=st.lists(st.tuples(st.integers(-4, 4), st.integers(90, 110)), max_size=30))
def test_fifo_matches_unit_by_unit_reference(stream):
    "Integer fills expanded into single units and matched by a plain queue give the same PnL per (entry, exit) pair."
    qty = np.array([q for q, _ in stream], dtype=float)
    price = np.array([p for _, p in stream], dtype=float)
    queue, expected = [], {}
    for j, (q, p) in enumerate(stream):
        for _ in range(abs(q)):
            s = 1 if q > 0 else -1
            if queue and queue[0][1] != s:
                i, side, entry = queue.pop(0)
                expected[(i, j)] = expected.get((i, j), 0.0) + side * (p - entry)
            else:
                queue.append((j, s, p))
    rt = round_trips(fill_frame(qty, price))
    pos = {t: k for k, t in enumerate(MIN[: len(stream)])}
    got = {}
    for row in rt.itertuples():
        key = (pos[row.entry_ts], pos[row.exit_ts])
        got[key] = got.get(key, 0.0) + row.pnl
    assert got.keys() == expected.keys()
    for k in got:
        assert got[k] == pytest.approx(expected[k])


def test_fifo_kernel_interpreted_equals_compiled():
    "The kernel's Python source (what coverage sees) gives what the compiled kernel gives, flips and dust included."
    rng = np.random.default_rng(5)
    qty = np.round(rng.normal(0, 3, 400), 1)
    qty[::7] = 0.0
    qty[10:13] = [0.3, -0.1, -0.2]
    fee = rng.uniform(0, 1, 400)
    py = getattr(_fifo_kernel, "py_func", _fifo_kernel)
    for a, b in zip(_fifo_kernel(qty, fee, _TOL), py(qty, fee, _TOL), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(py(qty, fee, _TOL)[0]) > 100


# --- bootstrap CI -----------------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    for seed in range(5):
        p = performance(random_equity(2000, seed=seed), seed=seed)
        assert p["sharpe_ci_low"] < p["sharpe"] < p["sharpe_ci_high"]
    eq = random_equity(2000, seed=7)
    a, b, c = (performance(eq, seed=s) for s in (0, 0, 1))
    assert (a["sharpe_ci_low"], a["sharpe_ci_high"]) == (b["sharpe_ci_low"], b["sharpe_ci_high"])
    assert (a["sharpe_ci_low"], a["sharpe_ci_high"]) != (c["sharpe_ci_low"], c["sharpe_ci_high"])
    assert a["sharpe"] == c["sharpe"]
    n0 = performance(eq, n_boot=0)
    assert math.isnan(n0["sharpe_ci_low"]) and math.isnan(n0["sharpe_ci_high"])


def test_bootstrap_ci_narrower_for_longer_series():
    short = performance(random_equity(500, seed=3))
    long = performance(random_equity(20_000, seed=3))
    w_short = short["sharpe_ci_high"] - short["sharpe_ci_low"]
    w_long = long["sharpe_ci_high"] - long["sharpe_ci_low"]
    assert w_long < w_short / 3  # ~ sqrt(40) narrower


def test_bootstrap_ci_width_matches_textbook_and_sees_autocorrelation():
    rng = np.random.default_rng(11)
    n, mu = 5000, 1e-4
    eps = rng.normal(0, 1e-3, n)
    sr = sharpe_ratio(eps + mu, N_MIN)
    lo, hi = sharpe_ci(eps + mu, N_MIN)
    # Lo (2002): standard error of the per-bar Sharpe of iid returns is sqrt((1 + SR^2 / 2) / n)
    textbook = 2 * 1.959964 * math.sqrt((1 + (sr / math.sqrt(N_MIN)) ** 2 / 2) / n) * math.sqrt(N_MIN)
    assert (hi - lo) == pytest.approx(textbook, rel=0.15)
    ar = np.empty(n)
    ar[0] = eps[0]
    for t in range(1, n):
        ar[t] = 0.6 * ar[t - 1] + eps[t]
    ar += mu
    iid_lo, iid_hi = sharpe_ci(ar, N_MIN, block=1)
    blk_lo, blk_hi = sharpe_ci(ar, N_MIN)
    assert (blk_hi - blk_lo) > 1.4 * (iid_hi - iid_lo)  # long-run sd is 2x the sd for phi = 0.6
    assert all(math.isnan(x) for x in sharpe_ci(np.array([0.01, 0.02]), N_MIN))
    assert all(math.isnan(x) for x in sharpe_ci(eps, N_MIN, n_boot=1))  # one replicate gives no interval


# --- pooling ----------------------------------------------------------------------------------------------------------


def fold_curves():
    "Three consecutive folds of different lengths, each from its own initial equity."
    out, start = [], 0
    for k, (n, e0) in enumerate([(300, 10_000.0), (200, 5_000.0), (400, 20_000.0)]):
        r = np.random.default_rng(k).normal(5e-5 * (1 - k), 1e-3, n - 1)
        out.append(pd.Series(e0 * np.exp(np.r_[0.0, np.cumsum(r)]), index=MIN[start : start + n]))
        start += n + 5  # a seam between folds
    return out


def test_pooled_equals_performance_of_concatenated_returns():
    folds = fold_curves()
    R = np.concatenate([c.to_numpy()[1:] / c.to_numpy()[:-1] - 1 for c in folds])
    idx = folds[0].index[:1].append([c.index[1:] for c in folds])
    concatenated = pd.Series(1e4 * np.cumprod(np.r_[1.0, 1 + R]), index=idx)
    res = pooled(folds, seed=3)
    ref = performance(concatenated, seed=3)
    assert res["pooled"].keys() == ref.keys()
    for k, v in ref.items():
        assert res["pooled"][k] == pytest.approx(v, rel=1e-9, nan_ok=True), k
    pd.testing.assert_index_equal(res["equity"].index, idx)
    table = res["folds"]
    assert list(table.index) == [0, 1, 2] and table.index.name == "fold"
    for k, c in enumerate(folds):
        assert table.loc[k, "total_return"] == pytest.approx(c.iloc[-1] / c.iloc[0] - 1)
        assert table.loc[k, "sharpe"] == pytest.approx(performance(c, periods_per_year=N_MIN, n_boot=0)["sharpe"])
    growth = np.prod([c.iloc[-1] / c.iloc[0] for c in folds])
    assert res["pooled"]["total_return"] == pytest.approx(growth - 1)
    assert res["pooled"]["n_bars"] == sum(map(len, folds)) - 2


def test_chain_equity_refuses_overlapping_folds_and_empty_input():
    folds = fold_curves()
    with pytest.raises(ValueError, match="fold 2"):
        chain_equity([folds[0], folds[2], folds[1]])
    with pytest.raises(ValueError, match="no fold"):
        chain_equity([])
    one = chain_equity([folds[0]])
    pd.testing.assert_series_equal(one, folds[0].rename("equity"), rtol=1e-12)


def test_fold_table_and_metrics_table():
    perfs = [performance(c, n_boot=0) for c in fold_curves()]
    ft = fold_table(perfs)
    assert ft.shape == (3, len(perfs[0])) and list(ft.columns) == list(perfs[0])
    a = performance(curve(PATH), fill_frame([1, -1], [100, 110], [0.1, 0.1]), n_boot=0)
    b = performance(curve(PATH), costs={"fee": 1.0, "funding": 2.0}, n_boot=0)
    t = metrics_table({"a": a, "b": b})
    assert list(t.columns) == ["a", "b"] and t.index.name == "metric"
    assert t.index[0] == "Total return" and "Sharpe (ann., log returns)" in t.index
    assert t.loc["Max drawdown", "a"] == pytest.approx(0.2)
    assert t.loc["Cost: funding", "b"] == 2.0 and math.isnan(t.loc["Cost: funding", "a"])
    assert t.index[-2:].tolist() == ["Cost: fee", "Cost: funding"]
    f = metrics_table({"a": a, "b": b}, formatted=True)
    assert f.loc["Max drawdown", "a"] == "20.00%"
    assert f.loc["Max drawdown duration", "a"] == str(pd.Timedelta("3min"))
    assert f.loc["Round trips", "a"] == "1" and f.loc["Round trips", "b"] == "n/a"
    assert f.loc["Costs", "b"] == "3.00"


# --- degenerate input -------------------------------------------------------------------------------------------------


def finite_or_nan(d: dict) -> bool:
    return all(isinstance(v, (int, float)) and not math.isinf(v) for v in d.values())


@pytest.mark.parametrize(
    "values",
    [[1e4] * 50, [1e4], [1e4, 1e4], [1e4, 1.01e4], [1e4, 1.01e4, 1.02e4], np.linspace(1e4, 9e3, 30)],
    ids=["flat", "one bar", "two flat bars", "two bars", "rising", "falling"],
)
def test_degenerate_inputs_give_no_warnings(values):
    eq = curve(values)
    no_fills = fill_frame([], [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        perfs = [
            performance(eq),
            performance(eq, no_fills, positions=pd.Series(0.0, index=eq.index)),
            performance(eq, fill_frame([1.0], [100.0], [0.1])),  # an open position, no round trip
            performance(eq, costs={}),
        ]
        second = curve(values).set_axis(MIN[len(values) + 1 : 2 * len(values) + 1])
        both = pooled([eq, second])["pooled"]
        for p in perfs:
            assert finite_or_nan(p)
            assert p["total_return"] == pytest.approx(values[-1] / values[0] - 1)
            assert p["max_drawdown"] >= 0
        assert finite_or_nan(both)
        assert both["total_return"] == pytest.approx((values[-1] / values[0]) ** 2 - 1)
        metrics_table({str(k): p for k, p in enumerate([*perfs, both])}, formatted=True)
    flat = performance(curve([1e4] * 50), no_fills)
    assert flat["n_trades"] == 0 and flat["n_round_trips"] == 0 and flat["exposure"] == 0.0
    assert math.isnan(flat["sharpe"]) and math.isnan(flat["hit_rate"]) and math.isnan(flat["calmar"])
    assert flat["costs_total"] == 0.0 and flat["max_drawdown_duration"] == 0


def test_empty_equity_and_bad_equity():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = performance(curve([]), fill_frame([], []))
    assert p["n_bars"] == 0 and finite_or_nan(p)
    with pytest.raises(ValueError, match="non-finite"):
        performance(curve([1.0, np.nan, 2.0]))


def test_deflated_sharpe_reproduces_bailey_and_lopez_de_prado():
    "The paper's example: SR 2.5 a year over 1,250 days, skew -3, kurtosis 10, best of 100 trials of variance 0.5."
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    assert probabilistic_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=1e-4)
    assert expected_max_sharpe(1, 0.5) == 0.0
    with pytest.raises(ValueError, match="need n_trials >= 1 and var >= 0"):
        expected_max_sharpe(0, 0.5)
    assert math.isnan(probabilistic_sharpe(0.1, 1))
    assert math.isnan(probabilistic_sharpe(math.nan, 100))


def test_deflated_sharpe_falls_with_trials_and_is_the_psr_for_one():
    r = np.random.default_rng(2).normal(2e-5, 1e-3, 4000)
    d = [deflated_sharpe(r, n) for n in (1, 10, 100, 1000)]
    assert d[0] > d[1] > d[2] > d[3]
    assert d[0] == pytest.approx(probabilistic_sharpe(r.mean() / r.std(ddof=1), len(r)), abs=0.01)  # normal returns
    assert deflated_sharpe(r, 10, trial_var=0.0) == pytest.approx(d[0])  # trials that cannot scatter deflate nothing
    assert deflated_sharpe(-r, 1) < 0.5 < d[0]
    assert math.isnan(deflated_sharpe(np.zeros(50))) and math.isnan(deflated_sharpe(r[:2]))
