"One owner per limit: the backtester, the compiled engine and the live Risk halt on the same bars; old names refused."

import pytest

from intraday.backtest import Backtester, SMACross
from intraday.config import EnvSettings, FeatureSettings, RiskSettings, SettingsError, load_settings
from intraday.data import synth_market
from intraday.env import bar_seconds
from intraday.features import FeaturePipeline
from intraday.fills import FillModel
from intraday.risk import Risk, TradingState

OFF = dict(ema=[], momentum=[], rsi=[], atr=[], vwap=[], realized_vol=[], range_vol=[], volume_z=[], kyle_lambda=[],
           adaptive=[], session_vwap=False, calendar=False, harmonics=[])  # fmt: skip


def live_halts(equity, risk: RiskSettings) -> list:
    "Feed an equity path (one valuation per bar close) to the live runner's Risk; where and why it halted."
    r, out = Risk(risk), []
    ts = equity.index.as_unit("ns").asi8 // 1_000_000_000
    close = ts + bar_seconds(ts)
    for bar, t, e in zip(equity.index, close, equity.to_numpy()):
        if r.note_equity(float(e), float(t)) == TradingState.HALTED:
            out.append((bar, "daily_loss" if r.reason.startswith("daily loss") else "drawdown"))
    return out


def test_backtest_compiled_and_live_halt_on_the_same_bars():
    bars = synth_market(days=5, seed=3, alpha=0.0)
    env = EnvSettings(positions=[-2.0, 0.0, 2.0], episode_len=100_000, force_flat=False)
    pipe = FeaturePipeline.from_settings(FeatureSettings(returns=[1], **OFF))
    risk = RiskSettings(daily_loss_limit=0.005, max_drawdown=0.02)
    bt = Backtester(pipe, FillModel(), env, risk)
    py = bt.run(bars, SMACross(env.positions, 5, 30), engine="python")
    fast = bt.run(bars, SMACross(env.positions, 5, 30))
    assert fast.engine == "compiled" and fast.halts == py.halts
    kinds = [k for _, k in py.halts]
    assert kinds.count("daily_loss") >= 2 and kinds[-1] == "drawdown"  # both limits, a daily halt ending at midnight
    assert live_halts(py.equity, risk) == py.halts
    after = py.decisions.target[py.decisions.index >= py.halts[-1][0]]
    assert len(after) > 100 and (after == 0).all()  # a drawdown halt lasts: flat to the end


def test_old_limit_names_are_refused_naming_the_new_ones(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[backtest]\nmax_position = 0.5\ndaily_loss_limit = 0.01\n[risk]\nmax_position = 3\n")
    with pytest.raises(SettingsError) as ei:
        load_settings(ini, environ={"INTRADAY__BACKTEST__MAX_POSITION": "0.2"})
    text = str(ei.value)
    assert len(ei.value.problems) == 4, text
    assert f"backtest.max_position (from {ini}): renamed; use [risk] max_weight (a fraction of equity" in text
    assert "backtest.max_position (from env INTRADAY__BACKTEST__MAX_POSITION): renamed; use [risk] max_weight" in text
    assert f"backtest.daily_loss_limit (from {ini}): renamed; use [risk] daily_loss_limit" in text
    assert f"risk.max_position (from {ini}): renamed; use [risk] max_position_qty (base units)" in text
    s = load_settings(environ={}, risk={"max_weight": 0.5, "max_position_qty": 2})
    assert (s.risk.max_weight, s.risk.max_position_qty) == (0.5, 2)
