"""The compiled engine against the Python loop (the reference): the same fills, decisions, equity and halts, to the bit.

Tolerance: none. Rule policies and bundles run through the same fill and order kernels in both engines; the only
input that differs is the features of a bundle (batch here, streamed there, equal to 1e-9 by the features' tests),
and the tests below require identical actions, fills (qty, price, fee, spread, impact) and equity on every bar."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_backtest import BARS, trained  # noqa: F401 (its trained-bundle fixture, shared)
from torch import nn

from intraday.backtest import Backtester, BuyAndHold, RandomPolicy, SMACross, bundle_policy
from intraday.bundle import PolicyModule
from intraday.compiled import BundleNet, compile_policy, pairwise_sum, tanh64
from intraday.config import EnvSettings, RiskSettings, load_settings
from intraday.fills import FillModel
from intraday.train import Trainer

COSTLY = FillModel(taker_bps=4, min_fee=0.1, spread="range", range_k=0.05, kyle_lambda=1e-6, participation=0.02,
                   latency_bars=3, price="typical")  # fmt: skip
RISK = RiskSettings(max_weight=0.6, daily_loss_limit=0.002, max_drawdown=0.04)


def same(fast, ref):
    "Identical results, bit for bit, and the engines said who ran."
    assert (fast.engine, ref.engine) == ("compiled", "python")
    pd.testing.assert_frame_equal(fast.fills, ref.fills, check_exact=True)
    pd.testing.assert_frame_equal(fast.decisions, ref.decisions, check_exact=True)
    pd.testing.assert_series_equal(fast.equity, ref.equity, check_exact=True)
    pd.testing.assert_series_equal(fast.positions, ref.positions, check_exact=True)
    assert fast.halts == ref.halts and fast.costs == ref.costs


@pytest.fixture(scope="module")
def pipe():
    return Trainer(load_settings(environ={}, env={"episode_len": 300}), BARS).splits.pipeline


@pytest.mark.parametrize(
    "make",
    [
        lambda pos: BuyAndHold(pos),
        lambda pos: SMACross(pos, 10, 40),
        lambda pos: SMACross(pos, 30, 150),  # slow window > 128: numpy's recursive pairwise sum
        lambda pos: RandomPolicy(pos, 7),
    ],
    ids=["buy-hold", "sma-10-40", "sma-30-150", "random"],
)
def test_rules_compiled_equal_python_with_every_cost_and_limit(pipe, make):
    env = EnvSettings(positions=[-1.0, -0.5, 0.0, 0.5, 1.0], episode_len=700)
    bt = Backtester(pipe, COSTLY, env, RISK)
    p_ref, p_fast = make(env.positions), make(env.positions)
    ref, fast = bt.run(BARS, p_ref, engine="python"), bt.run(BARS, p_fast)
    same(fast, ref)
    assert len(ref.fills) > 20 and ref.costs["impact"] > 0 and ref.halts  # costs, fills and halts all happen
    assert (ref.decisions.target.abs() <= 0.6).all() and ref.decisions.target.abs().max() > 0
    if isinstance(p_ref, SMACross):  # the policy object continues from where the Python loop left it
        assert p_fast.n == p_ref.n and np.array_equal(p_fast.buf, p_ref.buf)
        same(bt.run(BARS, p_fast, start=100, end=5000), bt.run(BARS, p_ref, start=100, end=5000, engine="python"))
    if isinstance(p_ref, RandomPolicy):
        assert p_fast.rng.bit_generator.state == p_ref.rng.bit_generator.state
    uncapped = Backtester(pipe, FillModel(**{**COSTLY.to_dict(), "participation": 0}), env, RISK)
    assert not uncapped.run(BARS, make(env.positions)).fills.equals(fast.fills)  # the cap binds: a real test


def test_rules_frictionless_long_only_and_windows(pipe):
    env = EnvSettings(positions=[0.0, 1.0], episode_len=2000, force_flat=False)
    bt = Backtester(pipe, FillModel.frictionless(), env)
    for start, end in ((0, len(BARS)), (500, 3000), (pipe.warmup, pipe.warmup + 3)):
        same(bt.run(BARS, SMACross(env.positions, 5, 20), start, end),
             bt.run(BARS, SMACross(env.positions, 5, 20), start, end, engine="python"))  # fmt: skip


def test_sma_ties_and_near_ties(pipe):
    "Flat stretches make the two means equal (a tie: short) or a rounding apart: numpy's sums decide, as in Python."
    bars = BARS.iloc[:4000].copy()
    bars.iloc[1000:1600, :4] = 100.0
    bars.iloc[2000:2600, :4] = 0.1 * np.round(bars.iloc[2000:2600, :4] * 10)  # few distinct prices: near ties
    env = EnvSettings(positions=[-1.0, 0.0, 1.0], episode_len=4000, force_flat=False)
    bt = Backtester(pipe, FillModel.frictionless(), env)
    for fast, slow in ((3, 7), (5, 20), (20, 100)):
        same(bt.run(bars, SMACross(env.positions, fast, slow), 0),
             bt.run(bars, SMACross(env.positions, fast, slow), 0, engine="python"))  # fmt: skip


def test_fallback_and_engine_errors(pipe):
    bt = Backtester(pipe, env=EnvSettings(episode_len=300))
    r = bt.run(BARS.iloc[:2000], lambda bar, features, state: 2)
    assert r.engine == "python" and "Python callable" in r.engine_note and len(r.fills) > 0
    assert bt.run(BARS.iloc[:2000], BuyAndHold([-1.0, 0.0, 1.0]), engine="python").engine_note == (
        "engine='python' asked for"
    )
    with pytest.raises(ValueError, match="cannot run this policy"):
        bt.run(BARS.iloc[:2000], lambda bar, features, state: 2, engine="compiled")
    with pytest.raises(ValueError, match="engine must be"):
        bt.run(BARS.iloc[:2000], BuyAndHold([-1.0, 0.0, 1.0]), engine="numba")

    class Custom(SMACross):  # a subclass with its own decision is a Python policy
        def __call__(self, bar, features, state):
            return 1

    assert compile_policy(Custom([-1.0, 0.0, 1.0]), 0, 3)[0] is None
    for wide in (BuyAndHold([0.0, 0.5, 1.0, 2.0]), RandomPolicy([0.0] * 5), SMACross([2.0, 1.0, 0.0, -1.0])):
        plan, why = compile_policy(wide, 0, 3)  # would index past the action set: the Python loop raises
        assert plan is None and "outside the 3 positions" in why
    with pytest.raises(IndexError):
        bt.run(BARS.iloc[:2000], BuyAndHold([0.0, 0.5, 1.0, 2.0]))


def test_exact_means_and_tanh():
    rng = np.random.default_rng(1)
    for n in (1, 5, 8, 9, 64, 127, 128, 129, 300, 4099):
        a = rng.normal(size=n) * 10.0 ** rng.integers(-4, 8, size=n)
        assert pairwise_sum(a, 0, n) == a.sum()  # numpy's own order: equal to the bit
    y = np.r_[np.linspace(-25, 25, 20001), 1e-300, -1e-12]
    assert max(abs(tanh64(v) - np.tanh(v)) for v in y) < 1e-14


@pytest.mark.filterwarnings("ignore:.*torch.jit:DeprecationWarning")
def test_network_from_module_agrees_or_defers():
    torch.manual_seed(3)
    for act in (nn.Tanh, nn.ReLU):
        net = nn.Sequential(nn.Linear(9, 32), act(), nn.Linear(32, 24), act(), nn.Linear(24, 4))
        mod = PolicyModule(net, mean=[0.1] * 6, std=[1.5] * 6, clip=4.0).eval()
        traced = torch.jit.trace(mod, torch.zeros(2, 9), check_trace=False)
        rows = np.random.default_rng(2).normal(0, 4, (5000, 9))
        rows[::37, 2] = np.nan
        rows[::101, 7] = np.inf  # a state value that overflows: the module's nan_to_num path
        mine = BundleNet.from_module(traced).actions(rows)
        with torch.no_grad():
            theirs = traced(torch.from_numpy(rows)).numpy()
        decided = mine >= 0
        assert decided.mean() > 0.98 and np.array_equal(mine[decided], theirs[decided])
    tied = PolicyModule(nn.Sequential(nn.Linear(4, 2, bias=False)), [0.0], [1.0], 5.0).eval()
    with torch.no_grad():
        tied.net[0].weight[:] = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    assert BundleNet.from_module(tied).actions(np.ones((3, 4))).tolist() == [-1, -1, -1]  # exact ties are deferred
    with pytest.raises(ValueError, match="Softmax"):
        BundleNet.from_module(PolicyModule(nn.Sequential(nn.Linear(4, 2), nn.Softmax(1)), [0.0], [1.0], 5.0))
    with pytest.raises(ValueError, match="buffers"):
        BundleNet.from_module(nn.Linear(4, 2))


def test_bundle_compiled_equals_torchscript_on_every_bar(trained):  # noqa: F811
    bundle = trained[0]  # test_backtest's small trained PPO bundle, trained on these same BARS
    env = EnvSettings(positions=bundle.positions, episode_len=400)
    for fm, risk in ((COSTLY, RISK), (FillModel(latency_bars=2), RiskSettings())):
        bt = Backtester(bundle.pipeline(), fm, env, risk)
        ref = bt.run(BARS, bundle_policy(bundle), end=9000, engine="python")  # TorchScript decides every bar
        fast = bt.run(BARS, bundle_policy(bundle), end=9000)
        same(fast, ref)
        assert fast.engine_note.startswith("bundle MLP 33-64-64-3") and "decided by TorchScript" in fast.engine_note
        assert ref.decisions.action.nunique() >= 2 and len(ref.fills) > 10  # the policy acts: not a constant
    # the network alone on every bar of the backtest: raw batch features and the position states the run saw
    raw = bundle.pipeline().transform(BARS).to_numpy()[fast.decisions.index.map(BARS.index.get_loc)]
    close = BARS.close.loc[fast.decisions.index].to_numpy()
    eq, qty = fast.equity.loc[fast.decisions.index].to_numpy(), fast.positions.loc[fast.decisions.index].to_numpy()
    left = np.random.default_rng(0).random(len(raw))
    rows = np.column_stack([raw, qty * close / eq, np.random.default_rng(1).normal(0, 0.01, len(raw)), left])
    mine, theirs = BundleNet.from_module(bundle.module).actions(rows), bundle.act_batch(rows)
    assert (mine >= 0).mean() > 0.97 and np.array_equal(mine[mine >= 0], theirs[mine >= 0])


def test_bundle_refused_when_it_does_not_fit(trained, pipe):  # noqa: F811
    bundle = trained[0]
    env = EnvSettings(positions=[0.0, 1.0], episode_len=300)
    plan, why = compile_policy(bundle_policy(bundle), len(pipe.names), 2)
    assert plan is None and "3 actions" in why
    plan, why = compile_policy(bundle_policy(bundle), 5, 3)
    assert plan is None and "takes 30 features" in why
    r = Backtester(bundle.pipeline(), env=env).run(BARS.iloc[:1500], SMACross(env.positions, 5, 20))
    assert r.engine == "compiled"
