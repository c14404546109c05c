import numpy as np
import pandas as pd
import pytest

from intraday.backtest import (
    Backtester,
    BuyAndHold,
    SMACross,
    bundle_policy,
    decision_targets,
    sma_targets,
    vectorbt_portfolio,
)
from intraday.bundle import PolicyBundle, export_bundle
from intraday.config import EnvSettings, RiskSettings, load_settings
from intraday.data import synth_market
from intraday.env import CLOCK
from intraday.fills import FillModel
from intraday.train import Trainer

SETTINGS = load_settings(environ={}, env={"episode_len": 300})
BARS = synth_market(days=12, seed=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A small trained PPO exported as a verified bundle, with its env splits."
    tmp = tmp_path_factory.mktemp("bt")
    train = {"total_timesteps": 4096, "n_envs": 4, "n_steps": 128, "batch_size": 128, "eval_every": 4096}
    settings = load_settings(environ={}, env={"episode_len": 300}, train={**train, "runs_dir": str(tmp)})
    trainer = Trainer(settings, BARS, tmp / "run")
    model = trainer.fit()
    s = trainer.splits
    path = export_bundle(model, s.pipeline, s.fill_model, s.env, tmp / "bundle")
    return PolicyBundle.load(path, s.pipeline), s


def test_bundle_backtest_reproduces_the_env_rollout_exactly(trained):
    bundle, splits = trained
    val = splits.bars["val"]
    offset = BARS.index.get_loc(val.index[0])
    raw = splits.pipeline.transform(BARS).to_numpy()
    env = splits.make_env("val")
    L = splits.env.episode_len

    def episode(s):
        obs, _ = env.reset(options={"start": s})
        fills, equity = [], []
        for _ in range(L):
            bar = offset + env._core.clock[0, CLOCK.bar]
            obs, _, _, _, info = env.step(bundle.act(raw[bar], obs[-3:].astype(np.float64)))
            equity.append(info["equity"])
            if info["fill_qty"]:
                fills.append((info["fill_qty"], info["fill_price"], info["fee"]))
        return fills, equity, info

    # the first episode start (every 97 bars) where the small policy trades at least 3 times
    for s in range(17, len(val) - L, 97):
        env_fills, env_equity, info = episode(s)
        if len(env_fills) >= 3:
            break
    bt = Backtester(splits.pipeline, splits.fill_model, splits.env)
    start = offset + s
    r = bt.run(BARS, bundle_policy(bundle), start=start, end=start + L + 1)
    assert len(env_fills) >= 3  # the policy trades: the comparison is not vacuous
    assert list(zip(r.fills.qty, r.fills.price, r.fills.fee, strict=True)) == env_fills
    assert r.equity.iloc[1:].tolist() == env_equity
    assert r.positions.iloc[-1] == info["position"]  # the same book at the end (forced flat, up to the cap)


def test_event_engine_agrees_with_vectorbt():
    simple = FillModel(kyle_lambda=0, participation=0, taker_bps=3, half_spread_bps=2)
    env = SETTINGS.env.model_copy(update={"positions": [-0.5, 0.0, 0.5], "borrow_apr": 0.0})  # vectorbt: no borrow
    pipe = Trainer(SETTINGS, BARS).splits.pipeline
    r = Backtester(pipe, simple, env).run(BARS, SMACross(env.positions, 10, 60))
    targets = decision_targets(r).reindex(BARS.index)
    value = vectorbt_portfolio(BARS, targets, simple, env).value().loc[r.equity.index]
    assert len(r.fills) > 20
    assert (value / r.equity - 1).abs().max() < 1e-6
    dearer = vectorbt_portfolio(BARS, targets, FillModel(kyle_lambda=0, participation=0, taker_bps=10), env).value()
    assert (dearer.loc[r.equity.index] / r.equity - 1).abs().max() > 1e-4  # a different cost model disagrees
    sweep = sma_targets(BARS, [(10, 60), (20, 100), (5, 30)], env.positions)
    pf = vectorbt_portfolio(BARS, sweep, simple, env)
    assert pf.value().shape[1] == 3
    one = vectorbt_portfolio(BARS, sweep[(10, 60)], simple, env).value()
    np.testing.assert_allclose(pf.value()[(10, 60)], one, rtol=1e-12)  # a sweep column is that pair's own run
    assert pf.value().iloc[-1].nunique() == 3
    with pytest.raises(ValueError, match="kyle_lambda, participation"):
        vectorbt_portfolio(BARS, targets, FillModel(), env)
    with pytest.raises(ValueError, match="borrow_apr"):  # the margin account's borrow cost is not in vectorbt
        vectorbt_portfolio(BARS, targets, simple, env.model_copy(update={"borrow_apr": 0.1}))


def test_risk_limits():
    ts = pd.date_range("2024-01-01", periods=3000, freq="1min", tz="UTC", name="ts")
    price = np.full(3000, 100.0)
    price[200:400] = np.linspace(100, 80, 200)  # a slide on day one
    bars = pd.DataFrame({"open": np.r_[100.0, price[:-1]], "high": np.maximum(price, np.r_[100.0, price[:-1]]),
                         "low": np.minimum(price, np.r_[100.0, price[:-1]]), "close": price, "volume": 1e6},
                        index=ts)  # fmt: skip
    pipe = Trainer(SETTINGS, BARS).splits.pipeline
    env = EnvSettings(episode_len=3000, force_flat=False)
    capped = Backtester(pipe, FillModel.frictionless(), env, RiskSettings(max_weight=0.25))
    r = capped.run(bars, BuyAndHold(env.positions), start=100)
    assert r.decisions.target.max() == 0.25 and r.positions.iloc[-1] == pytest.approx(0.25 * 10_000 / 100)
    stop = Backtester(pipe, FillModel.frictionless(), env, RiskSettings(daily_loss_limit=0.05))
    r = stop.run(bars, BuyAndHold(env.positions), start=100)
    assert r.halted_days == ["2024-01-01"]
    halted = r.decisions.loc["2024-01-01"].target
    assert halted.iloc[-2] == 0 and (r.decisions.loc["2024-01-02"].target == 1).all()
    assert halted.iloc[-1] == 1  # the 23:59 bar closes at midnight: its decision is the new day's, as live
    assert r.equity.loc["2024-01-01 23:00"] == pytest.approx(r.equity.loc["2024-01-01 12:00"])  # out of the market
