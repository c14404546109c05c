import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intraday.config import FillSettings
from intraday.data import synth_market
from intraday.fills import Fill, FillModel, estimate_kyle_lambda

FLAT = (100.0, 100.0, 100.0, 100.0, 1000.0)
params = st.fixed_dictionaries(
    {
        "taker_bps": st.floats(0, 50),
        "min_fee": st.floats(0, 5),
        "spread": st.sampled_from(["fixed", "range"]),
        "half_spread_bps": st.floats(0, 30),
        "range_k": st.floats(0, 1),
        "kyle_lambda": st.floats(0, 1e-4),
        "participation": st.floats(0, 1),
        "price": st.sampled_from(["open", "typical"]),
    }
)
bars = st.tuples(st.floats(50, 150), st.floats(0, 5), st.floats(0, 5), st.floats(0, 1), st.floats(0, 5000)).map(
    lambda t: (t[0], t[0] + t[1], t[0] - t[2], t[0] - t[2] + t[3] * (t[1] + t[2]), t[4])
)


@settings(max_examples=300, deadline=None)
@given(p=params, qty=st.floats(0.001, 1e4), bar=bars)
def test_round_trip_never_earns_on_a_flat_price(p, qty, bar):
    "Buy then sell the filled amount in the same bar: the PnL is minus the modelled costs, never positive."
    fm = FillModel(**p)
    buy = fm.fill(qty, bar)
    sell = fm.fill(-buy.filled, bar)
    pnl = buy.filled * (sell.price - buy.price) - buy.fee - sell.fee
    assert pnl <= 1e-9
    assert pnl == pytest.approx(-(buy.cost + sell.cost), rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(p=params, q1=st.floats(0.01, 200), grow=st.floats(1.01, 10), side=st.sampled_from([1, -1]))
def test_cost_grows_with_size(p, q1, grow, side):
    fm = FillModel(**{**p, "participation": 0.0})
    small, big = fm.fill(side * q1, FLAT), fm.fill(side * q1 * grow, FLAT)
    assert big.cost >= small.cost
    spread = p["spread"] == "fixed" and p["half_spread_bps"] > 1e-6  # a flat bar has no range
    fee = p["taker_bps"] > 1e-6 and p["min_fee"] == 0
    if spread or fee or p["kyle_lambda"] > 1e-12:
        assert big.cost > small.cost
    assert abs(big.price - 100.0) >= abs(small.price - 100.0)


@settings(max_examples=200, deadline=None)
@given(qty=st.floats(-1e6, 1e6), bar=bars)
def test_zero_cost_parameters_are_frictionless(qty, bar):
    f = FillModel.frictionless().fill(qty, bar)
    if qty == 0:
        assert f == Fill(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    else:
        assert f == Fill(qty, bar[0], 0.0, 0.0, 0.0, 0.0)


def test_components_exactly():
    fm = FillModel(taker_bps=10, maker_bps=2, half_spread_bps=5, kyle_lambda=1e-5, participation=0.1)
    bar = {"open": 200.0, "high": 202.0, "low": 198.0, "close": 201.0, "volume": 500.0}
    f = fm.fill(30, bar)
    assert f.filled == 30 and f.unfilled == 0
    assert f.price == pytest.approx(200 * (1 + 5e-4 + 1e-5 * 30))
    assert f.fee == pytest.approx(30 * f.price * 1e-3)
    assert f.spread_cost == pytest.approx(30 * 200 * 5e-4) and f.impact_cost == pytest.approx(1e-5 * 200 * 900)
    capped = fm.fill(-80, bar)
    assert capped.filled == -50 and capped.unfilled == -30
    assert capped.price == pytest.approx(200 * (1 - 5e-4 - 1e-5 * 50))
    maker = fm.fill(30, bar, maker=True)
    assert maker.fee == pytest.approx(30 * maker.price * 2e-4)
    assert fm.fill(10, (200.0, 202.0, 198.0, 201.0, 0.0)).filled == 0  # no volume, no fill
    typ = FillModel(price="typical", spread="range", range_k=0.5, half_spread_bps=0, kyle_lambda=0, taker_bps=0)
    g = typ.fill(1, bar)
    ref = (200 + 202 + 198 + 201) / 4
    assert g.price == pytest.approx(ref * (1 + 0.5 * 4 / ref))
    assert FillModel(min_fee=1.0, taker_bps=0.1).fill(1, FLAT).fee == 1.0
    assert FillModel().fill(0, FLAT).cost == 0


def test_invalid_parameters_listed_together():
    with pytest.raises(ValueError) as ei:
        FillModel(taker_bps=-1, participation=2, latency_bars=0, spread="mid", price="close")
    msg = str(ei.value)
    for part in ("taker_bps", "participation", "latency_bars", "look-ahead", "spread", "price"):
        assert part in msg


def test_from_settings_and_estimated_lambda():
    b = synth_market(days=5, seed=3)
    lam = estimate_kyle_lambda(b)
    assert 1e-8 < lam < 1e-5
    fm = FillModel.from_settings(FillSettings(kyle_lambda="auto", taker_bps=3), b)
    assert fm.kyle_lambda == lam and fm.taker_bps == 3
    assert FillModel.from_settings(FillSettings()).kyle_lambda == 5e-7
    with pytest.raises(ValueError, match="needs bars"):
        FillModel.from_settings(FillSettings(kyle_lambda="auto"))
    flat = b.assign(close=100.0)
    with pytest.raises(ValueError, match="cannot estimate"):
        estimate_kyle_lambda(flat)
    assert FillModel().to_dict()["kyle_lambda"] == 5e-7
    assert np.asarray(FillModel().params()).shape == (9,)
