"""The account the research core models (issue 20): spot (no short, no negative cash, buys sized for fee and move)
and margin (borrow at its cost), and session breaks (flat across a gap longer than [env] max_gap), the same in the
env, the Python backtester and the compiled engine."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from intraday.backtest import Backtester, BuyAndHold, SMACross
from intraday.config import EnvSettings, load_settings
from intraday.data import synth_market
from intraday.env import ACCOUNT, BOOK, IntradayEnv, account_params, session_flat, sized_order
from intraday.features import FeaturePipeline
from intraday.fills import FillModel

BARS = synth_market(days=6, seed=3)
FM = FillModel()
SETTINGS = load_settings(environ={})


def pipeline(bars=BARS) -> FeaturePipeline:
    return FeaturePipeline.from_settings(SETTINGS.features).fit(bars)


def both(env: EnvSettings, policy_of, bars=BARS):
    "The Python loop and the compiled engine on the same bars, policy and account."
    bt = Backtester(pipeline(bars), FM, env)
    py, co = bt.run(bars, policy_of(), engine="python"), bt.run(bars, policy_of(), engine="compiled")
    assert co.engine == "compiled"
    return py, co


def same(py, co):
    np.testing.assert_array_equal(py.equity.to_numpy(), co.equity.to_numpy())
    np.testing.assert_array_equal(py.fills.to_numpy(), co.fills.to_numpy())
    assert py.costs == co.costs and py.session_breaks == co.session_breaks


def test_spot_positions_outside_0_1_refused_naming_the_account():
    with pytest.raises(ValidationError, match=r"positions \[-1.0, 0.0, 1.0\] need a margin account"):
        EnvSettings(account="spot", positions=[-1, 0, 1])
    with pytest.raises(ValidationError, match="need a margin account"):
        EnvSettings(account="spot", positions=[0, 2])
    assert EnvSettings(account="spot", positions=[0, 0.5, 1]).account == "spot"


def test_sized_order_spot_never_sells_beyond_holdings_nor_buys_beyond_cash():
    ap = account_params(EnvSettings(account="spot", positions=[0, 1]), FillModel(taker_bps=10, min_fee=1), 60)
    assert sized_order(-5.0, 2.0, 0.0, 0.0, 100.0, ap) == -2.0  # a sale is capped at what is held
    assert sized_order(-5.0, 2.0, -0.5, 0.0, 100.0, ap) == -1.5  # ... less what is already being sold
    room = 100 * 1.001 * 1.01  # fee and the 100 bps buffer
    assert sized_order(50.0, 0.0, 0.0, 1001.0, 100.0, ap) == pytest.approx(1000 / room)
    assert sized_order(50.0, 0.0, 2.0, 1001.0, 100.0, ap) == pytest.approx((1000 - 2 * room) / room)
    assert sized_order(1.0, 0.0, 0.0, 1001.0, 100.0, ap) == 1.0  # affordable: unchanged
    margin = account_params(EnvSettings(), FM, 60)
    assert sized_order(-5.0, 2.0, 0.0, 0.0, 100.0, margin) == -7.0  # margin: short and borrow freely
    assert margin[ACCOUNT.borrow] == pytest.approx(0.1 * 60 / (365 * 86400))


def test_spot_weight_one_buys_once_within_cash_and_never_goes_negative():
    env = EnvSettings(account="spot", positions=[0, 1], episode_len=10**6, force_flat=False)
    py, co = both(env, lambda: BuyAndHold([0, 1]))
    same(py, co)
    assert len(py.fills) == 1  # the target is what the cash buys: no chase of the rest bar after bar
    cash = env.initial_cash - (py.fills.qty * py.fills.price + py.fills.fee).sum()
    assert 0 < cash < 0.02 * env.initial_cash  # leaves the fee and the buffer, not more
    assert py.costs["borrow"] == 0.0
    margin = EnvSettings(positions=[0, 1], episode_len=10**6, force_flat=False)
    m = Backtester(pipeline(), FM, margin).run(BARS, BuyAndHold([0, 1]))
    assert m.fills.qty.iloc[0] > py.fills.qty.iloc[0]  # margin buys the whole equity and borrows the fee
    assert m.costs["borrow"] > 0


def test_spot_account_holds_no_short_and_no_negative_cash_under_a_flipping_rule():
    env = EnvSettings(account="spot", positions=[0, 1], episode_len=500)
    py, co = both(env, lambda: SMACross([0.0, 1.0], 5, 20))
    same(py, co)
    assert len(py.fills) > 20
    assert (py.positions >= -1e-12).all()
    cash = env.initial_cash - (py.fills.qty * py.fills.price + py.fills.fee).cumsum()
    assert (cash >= 0).all()


def test_margin_short_pays_borrow_every_bar_the_same_in_both_engines():
    env = EnvSettings(positions=[-1, 0, 1], episode_len=500, borrow_apr=0.5)
    py, co = both(env, lambda: SMACross([-1.0, 0.0, 1.0], 5, 20))
    same(py, co)
    free = Backtester(pipeline(), FM, env.model_copy(update={"borrow_apr": 0.0})).run(BARS, SMACross([-1, 0, 1], 5, 20))
    assert py.costs["borrow"] > 0 and free.costs["borrow"] == 0
    assert py.equity.iloc[-1] < free.equity.iloc[-1]


def gapped(days_off=400) -> pd.DataFrame:
    "Six days of bars with a hole of `days_off` days after the third."
    a, b = BARS.iloc[: 3 * 1440], BARS.iloc[3 * 1440 :]
    b = b.set_axis(b.index + pd.Timedelta(days=days_off))
    return pd.concat([a, b])


def test_a_400_day_hole_is_a_session_break_flat_across_it_and_said():
    bars = gapped()
    k = 3 * 1440 - 1  # the last bar before the hole
    env = EnvSettings(positions=[0, 1], episode_len=10**6, force_flat=False)
    py, co = both(env, lambda: BuyAndHold([0, 1]), bars)
    same(py, co)
    assert py.session_breaks == [f"{bars.index[k]} -> {bars.index[k + 1]}"]
    assert py.summary()["session_breaks"] == 1
    assert py.positions.loc[bars.index[k]] == 0.0  # flat at the last close before the gap
    assert py.positions.loc[bars.index[k - 10]] > 0 and py.positions.iloc[-1] > 0  # held before, again after
    off = Backtester(pipeline(bars), FM, env.model_copy(update={"max_gap": ""})).run(bars, BuyAndHold([0, 1]))
    assert off.session_breaks == [] and off.positions.loc[bars.index[k]] > 0  # max_gap '' = carried over


def test_session_flat_marks_the_decisions_that_would_fill_across_the_gap():
    ts = np.array([0, 60, 120, 180, 240, 10_000, 10_060], dtype=float)
    assert session_flat(ts, 3600, 1).tolist() == [False, False, False, True, True, False, False]
    assert session_flat(ts, 3600, 2).tolist() == [False, False, True, True, True, False, False]
    assert not session_flat(ts, 1e9, 1).any()


def test_env_is_flat_across_a_session_break_and_spot_in_training():
    bars = gapped()
    pipe = pipeline(bars)
    X = pipe.transform(bars).to_numpy()
    env = EnvSettings(account="spot", positions=[0, 1], episode_len=2000)
    e = IntradayEnv(bars, X, FM, env)
    k = 3 * 1440 - 1
    e.reset(options={"start": k - 100})
    held = {}
    for _ in range(200):
        _, _, _, _, info = e.step(1)  # always ask for weight 1
        held[e._core.clock[0, 0]] = e._core.book[0, BOOK.qty]
        assert e._core.book[0, BOOK.cash] >= 0
    assert held[k] == 0.0 and held[k - 5] > 0 and held[k + 50] > 0
