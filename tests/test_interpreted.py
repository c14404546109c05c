"""The numba kernels run as plain Python (NUMBA_DISABLE_JIT=1) on small inputs, checked against the same references.

Coverage cannot see inside compiled code; `make pytest` runs this module first with the JIT disabled, so the
kernels' source lines are executed and measured for real, and it also proves the kernels mean the same thing
as Python as they do compiled. In the normal (compiled) run this module is skipped."""

import math
import os

import numpy as np
import pytest
from feature_reference import reference_features

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") != "1", reason="runs with NUMBA_DISABLE_JIT=1")


def test_features_interpreted_match_textbook_and_stream():
    from intraday.config import FeatureSettings
    from intraday.data import synth_market
    from intraday.features import FeaturePipeline

    fs = FeatureSettings()
    bars = synth_market(days=2, seed=3)
    pipe = FeaturePipeline.from_settings(fs)
    feats = pipe.transform(bars)
    ref = reference_features(bars, fs)[pipe.names]
    np.testing.assert_allclose(feats.to_numpy(), ref.to_numpy(), rtol=1e-6, atol=1e-9, equal_nan=True)
    stream = pipe.stream()
    rows = np.array([stream.update(b) for b in bars.iloc[:1500].itertuples(name=None)])
    np.testing.assert_allclose(rows, feats.iloc[:1500].to_numpy(), rtol=0, atol=1e-9)
    flat = bars.assign(open=5.0, high=5.0, low=5.0, close=5.0, volume=0.0)
    assert np.isfinite(pipe.transform(flat).iloc[200:].drop(columns=["vwap_session"]).to_numpy()).all()


def test_synth_interpreted_is_a_valid_market():
    from intraday.data import gap_report, planted_signal, synth_market, validate_bars

    bars, truth = synth_market(days=1, seed=5, alpha=0.1, truth=True)
    validate_bars(bars)
    assert gap_report(bars).empty
    assert np.array_equal(planted_signal(bars).to_numpy()[:-1], truth.signal.to_numpy()[1:])


def test_fills_and_env_interpreted():
    import pandas as pd

    from intraday.config import EnvSettings
    from intraday.env import IntradayEnv, IntradayVecEnv
    from intraday.fills import FillModel

    fm = FillModel(participation=0.5)
    flat = (100.0, 100.0, 100.0, 100.0, 1000.0)
    buy, sell = fm.fill(100, flat), fm.fill(-100, flat)
    assert 100 * (sell.price - buy.price) - buy.fee - sell.fee == pytest.approx(-(buy.cost + sell.cost))
    assert fm.fill(900, flat).filled == 500 and fm.fill(0, flat).filled == 0
    assert FillModel(spread="range", price="typical").fill(1, (100.0, 101.0, 99.0, 100.0, 10.0)).price > 100

    ts = pd.date_range("2024-01-01", periods=40, freq="1min", tz="UTC", name="ts")
    bars = pd.DataFrame({"open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0, "volume": 1000.0}, index=ts)
    settings = EnvSettings(episode_len=10, drawdown_penalty=1.0, turnover_penalty=0.1)
    env = IntradayEnv(bars, np.zeros((40, 1)), fm, settings)
    env.reset(options={"start": 0})
    for a in [2, 2, 0, 0, 1, 2, 1, 0, 2, 2]:
        obs, r, term, trunc, info = env.step(a)
    assert trunc and info["position"] == 0 and info["equity"] < 10_000
    vec = IntradayVecEnv(bars, np.zeros((40, 1)), fm, settings, n_envs=2, seed=0)
    vec.reset_at([0, 3])
    for _ in range(10):
        obs, rew, done, infos = vec.step(np.array([2, 0]))
    assert done.all() and infos[0]["terminal_observation"].shape == (4,)
    crash = bars.copy()
    crash.iloc[5:, :4] = 50.0
    bust = IntradayEnv(
        crash, np.zeros((40, 1)), FillModel.frictionless(), EnvSettings(positions=[0, 5], episode_len=10)
    )
    bust.reset(options={"start": 0})
    for _ in range(10):
        *_, term, trunc, info = bust.step(1)
        if term:
            break
    assert term and math.isfinite(info["equity"])


def test_compiled_engine_interpreted_matches_python_loop():
    from intraday.backtest import Backtester, RandomPolicy, SMACross
    from intraday.compiled import BundleNet
    from intraday.config import EnvSettings, FeatureSettings, RiskSettings
    from intraday.data import synth_market
    from intraday.features import FeaturePipeline
    from intraday.fills import FillModel

    bars = synth_market(days=1, seed=4)
    env = EnvSettings(positions=[-1.0, 0.0, 1.0], episode_len=200)
    fm = FillModel(min_fee=0.1, participation=0.01, latency_bars=2)
    bt = Backtester(
        FeaturePipeline.from_settings(FeatureSettings()),
        fm,
        env,
        RiskSettings(daily_loss_limit=1e-3, max_drawdown=2e-3),
    )
    for make in (lambda: SMACross(env.positions, 5, 140), lambda: RandomPolicy(env.positions, 1)):
        fast, ref = bt.run(bars, make(), 50), bt.run(bars, make(), 50, engine="python")
        assert fast.engine == "compiled" and fast.fills.equals(ref.fills) and fast.equity.equals(ref.equity)
    import torch
    from torch import nn

    from intraday.bundle import PolicyModule

    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    mod = PolicyModule(net, [0.0, 0.0], [1.0, 1.0], 5.0).eval()
    rows = np.random.default_rng(0).normal(0, 2, (50, 5))
    mine = BundleNet.from_module(mod).actions(rows)
    with torch.no_grad():
        theirs = mod(torch.from_numpy(rows)).numpy()
    assert (mine >= 0).sum() > 40 and (mine[mine >= 0] == theirs[mine >= 0]).all()


def test_account_interpreted_spot_caps_and_margin_borrow():
    import pandas as pd

    from intraday.backtest import Backtester, BuyAndHold
    from intraday.config import EnvSettings, FeatureSettings
    from intraday.features import FeaturePipeline
    from intraday.fills import FillModel

    ts = pd.date_range("2024-01-01", periods=60, freq="1min", tz="UTC", name="ts")
    price = np.full(60, 100.0)
    price[31:] = 110.0  # a 10 % jump past the spot buffer between a decision and its fill
    bars = pd.DataFrame({"open": price, "high": price, "low": price, "close": price, "volume": 1e6}, index=ts)
    bars = pd.concat([bars, bars.set_axis(ts + pd.Timedelta(days=3))])  # and a session break
    pipe = FeaturePipeline.from_settings(FeatureSettings(returns=[1], ema=[], momentum=[], rsi=[], atr=[], vwap=[],
                                                         realized_vol=[], range_vol=[], volume_z=[], kyle_lambda=[],
                                                         adaptive=[], session_vwap=False, calendar=False,
                                                         harmonics=[]))  # fmt: skip
    spot = EnvSettings(account="spot", positions=[0, 1], episode_len=1000, force_flat=False)
    r = Backtester(pipe, FillModel(participation=0), spot).run(bars, BuyAndHold([0, 1]), start=30)
    cash = spot.initial_cash - (r.fills.qty * r.fills.price + r.fills.fee).cumsum()
    assert (cash >= 0).all() and len(r.session_breaks) == 1  # the buy at 110 was cut to what the cash pays
    margin = EnvSettings(positions=[-1, 0], episode_len=1000, force_flat=False, borrow_apr=1.0)
    m = Backtester(pipe, FillModel(participation=0), margin).run(bars, lambda bar, x, state: 0, start=2)  # short
    assert m.costs["borrow"] > 0  # a short pays to borrow every bar


def test_loss_limit_kernels_interpreted():
    import math

    import numpy as np

    from intraday.risk import (
        LIMIT_DAILY_LOSS,
        LIMIT_DRAWDOWN,
        LIMIT_EQUITY,
        LIMIT_NONE,
        capped_weight,
        limit_halt_end,
        limit_state,
        limit_step,
        loss_limits,
    )

    day = 19_000 * 86400.0
    lim = limit_state()
    assert loss_limits(lim, day, 100.0, 0.02, 0.05, False) == LIMIT_NONE
    assert loss_limits(lim, day + 60, 97.0, 0.02, 0.05, True) == LIMIT_NONE  # halted: the books only
    assert loss_limits(lim, day + 120, 97.0, 0.02, 0.05, False) == LIMIT_DAILY_LOSS
    assert loss_limits(lim, day + 86400, 94.0, 0.02, 0.05, False) == LIMIT_DRAWDOWN
    assert loss_limits(lim, day, -1.0, 0.02, 0.0, False) == LIMIT_EQUITY
    assert loss_limits(lim, day, math.nan, 0.0, 0.0, False) == LIMIT_NONE
    assert limit_halt_end(LIMIT_DAILY_LOSS, day + 5) == day + 86400 and limit_halt_end(LIMIT_EQUITY, day) == math.inf
    halt = np.zeros(1)
    assert limit_step(limit_state(), halt, day, 100.0, 0.0, 0.0) == LIMIT_NONE and halt[0] == 0.0
    halt[0] = day + 10
    assert limit_step(lim, halt, day + 10, 100.0, 0.0, 0.0) == LIMIT_NONE and halt[0] == 0.0  # its midnight passed
    assert capped_weight(2.0, 1.5) == 1.5 and capped_weight(-0.5, 1.0) == -0.5


def test_basket_kernel_interpreted_plants_and_reads_the_same_signal():
    "intraday.panel._plant as Python: the signal it plants is the one the oracle reads back from the returns."
    from intraday.panel import KINDS, _plant

    r = np.random.default_rng(0).normal(0, 0.001, (300, 3))
    r[5, 1] = np.nan  # a missing bar: counted as no move
    for kind, code in KINDS.items():
        planted, z = _plant(code, r, np.full(3, 0.001), 0.2, 20)
        _, z_read = _plant(code, planted, np.ones(3), 0.0, 20)
        np.testing.assert_array_equal(z, z_read)
        ok = np.isfinite(r[1:])
        np.testing.assert_allclose((planted[1:] - r[1:])[ok], (0.2 * 0.001 * z[:-1])[ok], atol=1e-15, err_msg=kind)
        assert np.isnan(planted[5, 1])  # a missing bar stays missing


def test_cross_features_interpreted_equal_compiled_figures():
    "intraday.xfeatures' step as Python: beta and correlation of scaled copies of one return series, ties ranked."
    from intraday.xfeatures import CrossStream, cross_batch

    a = np.random.default_rng(3).normal(0, 0.001, 150)
    r = np.column_stack([a, 2 * a, -a, a])  # the first and the last tie
    f = cross_batch(r, 10, 50)
    np.testing.assert_allclose(f[-1, :, 2], np.array([1, 2, -1, 1]) * 4 / 3, rtol=1e-6)  # the basket: 3/4 of a
    np.testing.assert_allclose(f[-1, :, 3], [1, 1, -1, 1], rtol=1e-6)
    assert f[-1, 0, 1] == f[-1, 3, 1]
    s = CrossStream(4, 10, 50)
    assert np.array_equal(np.array([s.update(x) for x in r]), f, equal_nan=True)


def test_portfolio_kernels_interpreted():
    from intraday.config import EnvSettings, RiskSettings
    from intraday.fills import FillModel
    from intraday.panel import Basket
    from intraday.portfolio import PortfolioBacktester, TargetWeights

    basket = Basket("rotation", alpha=0.1)
    panel = basket.generate(days=0.5, seed=2)
    panel.bars["BBB/USDT"].iloc[100:130] = np.nan  # a stated gap
    w = basket.oracle(panel) * 0.75
    w.iloc[::3] = np.nan
    w.iloc[::50] = 0.6  # 180 % gross asked now and then: the cap denies it
    for env in (EnvSettings(episode_len=200), EnvSettings(account="spot", positions=[0, 1], episode_len=200)):
        risk = RiskSettings(max_drawdown=0.01, max_gross=0.8, max_beta=0.75)
        bt = PortfolioBacktester(FillModel(participation=0.01, latency_bars=2), env, risk)
        rc, rp = bt.run(panel, TargetWeights(w)), bt.run(panel, TargetWeights(w), engine="python")
        assert rc.equity.equals(rp.equity) and rc.fills.equals(rp.fills) and len(rc.fills) > 20
        assert rc.denials == rp.denials and "gross" in {c for *_, c in rc.denials}
        assert not rc.fills[rc.fills.symbol == "BBB/USDT"].index.isin(panel.index[100:130]).any()
        if env.account == "spot":
            assert (rc.positions >= 0).all().all() and (rc.equity - rc.value.sum(axis=1)).min() >= -1e-9


def test_basket_env_kernels_interpreted():
    from intraday.basket import build_basket_envs, limit_weights
    from intraday.config import load_settings
    from intraday.panel import Basket

    assert limit_weights(np.array([1.0, 1.0, -1.0]), 1.0, 0.2).round(4).tolist() == [0.2, 0.2, -0.2]
    panel = Basket("rotation", alpha=0.1).generate(days=8, seed=3)
    splits = build_basket_envs(load_settings(env={"episode_len": 60}), panel, cross=(10, 30))
    vec = splits.make_vec_env("train", n_envs=2, seed=0)
    obs = vec.reset()
    acts = np.random.default_rng(0).integers(0, 3, (70, 2, 3))
    for a in acts:
        obs, rewards, dones, infos = vec.step(a)
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    assert sum(i["fills"] for i in infos) >= 0 and obs.shape == (2, 3 * (len(splits.names) + 3))
