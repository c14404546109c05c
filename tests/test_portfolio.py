"""Portfolio backtests: two engines equal to the bit, vectorbt's cash-sharing group as the reference, shared cash
on spot, missing bars, limits, per-symbol features, baselines and per-symbol metrics."""

import numpy as np
import pandas as pd
import pytest

from intraday.config import EnvSettings, FeatureSettings, RiskSettings
from intraday.features import FeaturePipeline
from intraday.fills import FillModel
from intraday.panel import Basket, make_panel
from intraday.portfolio import (
    PortfolioBacktester,
    TargetWeights,
    buy_and_hold,
    equal_weight,
    portfolio_metrics,
    vectorbt_basket,
    xs_momentum,
)

FIVE = Basket("rotation", alpha=0.05, betas=(1.0, 0.8, 1.2, 0.9, 1.1),
              symbols=("AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT", "EEE/USDT"))  # fmt: skip
PANEL = FIVE.generate(days=4, seed=7)
MARGIN = EnvSettings(force_flat=False, max_gap="", account="margin", borrow_apr=0.0)
VBT_FM = FillModel(taker_bps=3.0, half_spread_bps=1.5, kyle_lambda=0, participation=0)


def noisy_weights(panel, seed=0, every=7, lo=-0.3, hi=0.3):
    "Random weights every `every` bars (NaN between): a policy with no idea, many orders."
    rng = np.random.default_rng(seed)
    w = pd.DataFrame(rng.uniform(lo, hi, (len(panel.index), len(panel.symbols))), panel.index, panel.symbols)
    w.iloc[np.arange(len(w)) % every != 0] = np.nan
    return TargetWeights(w)


def same(a, b):
    "Two results equal to the bit."
    return a.equity.equals(b.equity) and a.fills.equals(b.fills) and a.pnl.equals(b.pnl) and a.halts == b.halts


@pytest.mark.parametrize("env", [EnvSettings(), EnvSettings(account="spot", positions=[0, 1]), MARGIN])
def test_engines_equal_to_the_bit_with_full_costs(env):
    fms = {
        s: FillModel(taker_bps=2.0 + i, kyle_lambda=5e-7 * (i + 1), participation=0.05, latency_bars=2)
        for i, s in enumerate(PANEL.symbols)
    }  # fmt: skip (each symbol its own costs and volume cap)
    risk = RiskSettings(max_weight=0.25, max_drawdown=0.2)
    pol = noisy_weights(PANEL, every=20, lo=0.0 if env.account == "spot" else -0.3)
    bt = PortfolioBacktester(fms, env, risk)
    rc, rp = bt.run(PANEL, pol, start=10), bt.run(PANEL, pol, start=10, engine="python")
    assert (rc.engine, rp.engine) == ("compiled", "python") and same(rc, rp) and len(rc.fills) > 500
    assert rc.weights.abs().max().max() <= 0.25 * 1.02  # the cap per symbol (drift between rebalances)
    assert abs(rc.pnl.iloc[-1].sum() - rc.pnl.iloc[0].sum() - (rc.equity.iloc[-1] - rc.equity.iloc[0])
               - rc.costs["borrow"]) < 1e-6 * env.initial_cash  # fmt: skip
    if env.force_flat:  # episodes of a day: flat at each end
        assert (rc.positions.iloc[1440 * np.arange(1, 4) - 1 + 10] == 0).all().all()
    if env.account == "spot":
        assert (rc.positions >= 0).all().all() and (rc.equity - rc.value.sum(axis=1)).min() >= -1e-9


@pytest.mark.parametrize("policy", ["noisy", "oracle", "momentum", "equal"])
def test_equal_to_vectorbt_grouped_cash_sharing(policy):
    pol = {"noisy": lambda: noisy_weights(PANEL, seed=3, lo=-0.19, hi=0.19),
           "oracle": lambda: TargetWeights(FIVE.oracle(PANEL) * 0.9),
           "momentum": lambda: xs_momentum(PANEL, lookback=30, every=15, top=2, gross=0.95),
           "equal": lambda: equal_weight(PANEL, every=60, gross=0.95)}[policy]()  # fmt: skip
    r = PortfolioBacktester(VBT_FM, MARGIN).run(PANEL, pol)
    pf = vectorbt_basket(PANEL, pol, VBT_FM, MARGIN)
    assert int(pf.orders.count()) == len(r.fills) > 0
    np.testing.assert_allclose(pf.value().to_numpy(), r.equity.to_numpy(), rtol=1e-12)
    rec = pf.orders.records_readable
    np.testing.assert_allclose(np.sort(rec["Size"].to_numpy()), np.sort(r.fills["qty"].abs().to_numpy()), rtol=1e-9)


def test_vectorbt_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="not expressible in vectorbt: set kyle_lambda, participation"):
        vectorbt_basket(PANEL, equal_weight(PANEL), FillModel(), MARGIN)
    with pytest.raises(ValueError, match="spot account"):
        vectorbt_basket(PANEL, equal_weight(PANEL), VBT_FM, EnvSettings(account="spot", positions=[0, 1]))


def test_spot_shares_cash_and_rotation_buys_wait_for_the_sells():
    spot = EnvSettings(account="spot", positions=[0, 1], force_flat=False, max_gap="")
    greedy = TargetWeights(pd.DataFrame(1.0, PANEL.index, PANEL.symbols))  # 500 % of equity asked, every bar
    r = PortfolioBacktester(FillModel(), spot).run(PANEL, greedy)
    assert r.weights.sum(axis=1).max() <= 1.0 + 1e-9 and (r.equity - r.value.sum(axis=1)).min() >= -1e-9
    w = pd.DataFrame(np.nan, PANEL.index, PANEL.symbols)
    w.iloc[0] = [0.95, 0, 0, 0, 0]
    w.iloc[100] = [0, 0.95, 0, 0, 0]  # rotate everything from AAA to BBB
    r = PortfolioBacktester(FillModel(), spot).run(PANEL, TargetWeights(w))
    first = r.fills.groupby("symbol").head(1).set_index("symbol")
    sold = r.fills[(r.fills.symbol == "AAA/USDT") & (r.fills.qty < 0)].index[0]
    assert first.loc["BBB/USDT", "qty"] > 0 and r.fills[r.fills.symbol == "BBB/USDT"].index[0] >= sold
    assert r.weights.iloc[-1]["BBB/USDT"] > 0.9


def test_missing_bars_are_neither_decided_nor_filled():
    holes = {s: (b.drop(b.index[1000:1200]) if s == "CCC/USDT" else b) for s, b in PANEL.bars.items()}
    gappy = make_panel(holes)
    assert gappy.gaps().to_dict("records")[0]["missing"] == 200
    pol = noisy_weights(gappy, every=3)
    r = PortfolioBacktester(VBT_FM, MARGIN).run(gappy, pol)
    assert not r.fills[r.fills.symbol == "CCC/USDT"].index.isin(PANEL.index[1000:1200]).any()
    held = r.positions["CCC/USDT"].iloc[1001:1200]
    assert held.nunique() == 1 and held.iloc[0] != 0  # its position stands through the gap
    assert same(r, PortfolioBacktester(VBT_FM, MARGIN).run(gappy, pol, engine="python"))


def test_a_loss_limit_halts_the_account_in_both_engines():
    bt = PortfolioBacktester(VBT_FM, MARGIN, RiskSettings(max_drawdown=0.004))
    pol = noisy_weights(PANEL, seed=5)
    rc, rp = bt.run(PANEL, pol), bt.run(PANEL, pol, engine="python")
    assert rc.halts and rc.halts[0][1] == "drawdown" and same(rc, rp)
    after = rc.positions.loc[rc.halts[0][0] :].iloc[3:]
    assert (after == 0).all().all()  # halted for good: flat two bars later, nothing reopens


def test_python_policy_sees_each_symbols_streamed_features():
    pipe = FeaturePipeline.from_settings(FeatureSettings())
    seen = {}

    def policy(i, bars, features, state):
        seen[i] = (bars.copy(), features.copy(), state.copy())
        return np.full(len(bars), 0.1) if i % 50 == 0 else np.full(len(bars), np.nan)

    r = PortfolioBacktester(VBT_FM, MARGIN, pipeline=pipe).run(PANEL, policy, start=pipe.warmup)
    batch = {s: pipe.transform(PANEL.bars[s]).to_numpy() for s in PANEL.symbols}
    for i in (pipe.warmup, pipe.warmup + 777, len(PANEL.index) - 2):
        bars, feats, state = seen[i]
        for a, s in enumerate(PANEL.symbols):
            np.testing.assert_allclose(feats[a], batch[s][i], rtol=1e-9, atol=1e-12)  # batch == stream, per symbol
            assert bars[a, 3] == PANEL.bars[s]["close"].iloc[i]
    assert np.allclose(seen[len(PANEL.index) - 2][2][:, 0], r.weights.iloc[-2], atol=1e-12)  # position state
    assert len(r.fills) > 0 and r.engine == "python"


def test_clear_errors():
    bt = PortfolioBacktester(VBT_FM, MARGIN)
    with pytest.raises(ValueError, match=r"no fill model for \['CCC/USDT'"):
        PortfolioBacktester({"AAA/USDT": VBT_FM, "BBB/USDT": VBT_FM}).run(PANEL, equal_weight(PANEL))
    with pytest.raises(ValueError, match="different latency_bars"):
        PortfolioBacktester({s: FillModel(latency_bars=1 + (s == "BBB/USDT")) for s in PANEL.symbols}).run(
            PANEL, equal_weight(PANEL)
        )
    with pytest.raises(ValueError, match=r"no column for \['EEE/USDT'\]"):
        bt.run(PANEL, TargetWeights(pd.DataFrame(0.1, PANEL.index, PANEL.symbols[:4])))
    with pytest.raises(ValueError, match="returned weights of shape"):
        bt.run(PANEL, lambda i, b, f, s: np.zeros(2))
    with pytest.raises(ValueError, match="runs TargetWeights only"):
        bt.run(PANEL, lambda i, b, f, s: np.zeros(5), engine="compiled")
    with pytest.raises(ValueError, match="engine must be"):
        bt.run(PANEL, equal_weight(PANEL), engine="numba")
    with pytest.raises(ValueError, match="leaves no bar to trade"):
        bt.run(PANEL, equal_weight(PANEL), start=len(PANEL.index))
    with pytest.raises(ValueError, match="top must be in 1..5"):
        xs_momentum(PANEL, top=6)
    empty = make_panel({"A/USDT": PANEL.bars["AAA/USDT"].iloc[:10], "B/USDT": PANEL.bars["BBB/USDT"].iloc[10:20]})
    with pytest.raises(ValueError, match="no bar at which every symbol"):
        equal_weight(empty)


def test_baselines_are_causal_and_metrics_add_up():
    cut = make_panel({s: b.iloc[:3000] for s, b in PANEL.bars.items()})
    for make in (lambda p: xs_momentum(p, 60, 30, top=2), lambda p: equal_weight(p, 240), buy_and_hold):
        whole, part = make(PANEL).weights, make(cut).weights
        pd.testing.assert_frame_equal(whole.loc[: cut.index[-1]].dropna(how="all"), part.dropna(how="all"))
    bt = PortfolioBacktester(FillModel.frictionless(), MARGIN)  # five symbols' rotation pays its way only without costs
    oracle, ew = bt.run(PANEL, TargetWeights(FIVE.oracle(PANEL) * 0.9)), bt.run(PANEL, equal_weight(PANEL, 1440))
    m, table = portfolio_metrics(oracle, n_boot=50)
    assert abs(table["contribution"].sum() - m["total_return"]) < 1e-9
    assert abs(table["share_of_pnl"].abs().sum() - 1) < 1e-9 and table["fills"].sum() == len(oracle.fills)
    assert m["herfindahl_mean"] == pytest.approx(1.0) and m["sharpe_ci_low"] < m["sharpe"] < m["sharpe_ci_high"]
    me, _ = portfolio_metrics(ew, n_boot=0)
    assert me["herfindahl_mean"] == pytest.approx(0.2, abs=0.01) and me["turnover_per_day"] < 1
    assert m["sharpe"] > me["sharpe"] and m["turnover_per_day"] > 10 * me["turnover_per_day"]
    assert oracle.summary()["fills"] == len(oracle.fills)


def test_basket_caps_deny_new_exposure_with_their_reason_in_both_engines():
    pol = noisy_weights(PANEL, seed=9, every=10, lo=-0.4, hi=0.4)
    free = PortfolioBacktester(VBT_FM, MARGIN).run(PANEL, pol)
    assert not free.denials and free.weights.abs().sum(axis=1).max() > 0.9
    cases = (({"max_gross": 0.6}, "gross"), ({"max_net": 0.2}, "net"), ({"max_herfindahl": 0.35}, "herfindahl"),
             ({"max_beta": 0.3}, "beta"))  # fmt: skip
    for caps, name in cases:
        bt = PortfolioBacktester(VBT_FM, MARGIN, RiskSettings(**caps))
        rc, rp = bt.run(PANEL, pol), bt.run(PANEL, pol, engine="python")
        assert same(rc, rp) and rc.denials == rp.denials and len(rc.denials) > 10
        assert {c for *_, c in rc.denials} == {name} and {s for _, s, _ in rc.denials} <= set(PANEL.symbols)
    capped = PortfolioBacktester(VBT_FM, MARGIN, RiskSettings(max_gross=0.6)).run(PANEL, pol)
    assert capped.weights.abs().sum(axis=1).max() < 0.6 * 1.1  # within the cap, up to the drift between decisions
    w = pd.DataFrame(np.nan, PANEL.index, PANEL.symbols)
    w.iloc[0], w.iloc[50] = [0.3, 0.3, 0, 0, 0], [np.nan, np.nan, 0.3, np.nan, np.nan]  # 0.9 gross asked at 50
    w.iloc[100] = [0.1, np.nan, 0.3, np.nan, np.nan]  # the cut makes room for the third
    r = PortfolioBacktester(VBT_FM, MARGIN, RiskSettings(max_gross=0.75)).run(PANEL, TargetWeights(w))
    assert r.denials == [(PANEL.index[50], "CCC/USDT", "gross")]
    assert r.positions["CCC/USDT"].iloc[:101].abs().max() == 0 and r.weights["CCC/USDT"].iloc[-1] > 0.25
    assert r.weights["AAA/USDT"].iloc[-1] < 0.11
