"""The supervised baseline: target, cost, mask, the hysteresis rule, seeded early-stopped fits, out of sample."""

import numpy as np
import pytest
import torch

from intraday.config import load_settings
from intraday.env import build_envs
from intraday.fills import FillModel
from intraday.markets import make_market
from intraday.supervised import (
    EdgeNet,
    RuleNet,
    SupervisedConfig,
    fit_supervised,
    forward_returns,
    round_trip_cost,
    select_supervised,
)

FAST = dict(max_epochs=6, patience=2, batch_size=512)


@pytest.fixture(scope="module")
def trend_splits():
    "20 days of a strongly planted trend (alpha 0.2): 12 train, 4 validation, ~3 test days."
    return build_envs(load_settings(), make_market("trend", days=20, seed=5, alpha=0.2))


@pytest.fixture(scope="module")
def placebo_splits():
    return build_envs(load_settings(), make_market("trend", days=20, seed=5, alpha=0.0))


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="model must be 'linear' or 'mlp'"):
        SupervisedConfig(model="gbm")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        SupervisedConfig(horizon=0)
    with pytest.raises(ValueError, match="no hysteresis band"):
        SupervisedConfig(enter=0.5, exit=0.8)
    with pytest.raises(ValueError, match="patience, max_epochs and batch_size"):
        SupervisedConfig(patience=0)


def test_forward_returns_start_at_the_next_open():
    bars = make_market("flow", days=1, seed=1)
    y = forward_returns(bars, 5)
    o, c = bars.open.to_numpy(), bars.close.to_numpy()
    np.testing.assert_allclose(y[:-5], np.log(c[5:] / o[1:-4]))
    assert np.isnan(y[-5:]).all()
    assert np.isnan(forward_returns(bars.iloc[:3], 5)).all()


def test_round_trip_cost_fixed_and_range():
    bars = make_market("trend", days=1, seed=1)
    price = bars.close.median()
    assert round_trip_cost(FillModel(), bars, 1e4) == pytest.approx(2 * (3e-4 + 5e-7 * 1e4 / price))
    fm = FillModel(spread="range", range_k=0.2, kyle_lambda=0.0, taker_bps=0.0)
    rng = ((bars.high - bars.low) / bars.open).median()
    assert round_trip_cost(fm, bars, 1e4) == pytest.approx(2 * 0.2 * rng)


def test_mask_zeroes_ignored_features():
    net = EdgeNet(2, (), 1.0, keep=np.array([1.0, 0.0])).requires_grad_(False)
    a, b = torch.tensor([[1.0, 5.0]]), torch.tensor([[1.0, -7.0]])
    assert torch.equal(net(a), net(b))


class _Edge(torch.nn.Module):
    def forward(self, x):
        return x[:, 0]


@pytest.mark.parametrize(
    "edge, weight, action",
    [(2.0, 0.0, 2), (0.5, 0.0, 1), (-2.0, 0.0, 0), (0.5, 1.0, 2), (-0.1, 1.0, 1), (-2.0, 1.0, 0),
     (0.1, -1.0, 1), (-0.5, -1.0, 0), (2.0, -1.0, 2)],
)  # fmt: skip
def test_rule_enters_above_cost_and_exits_with_hysteresis(edge, weight, action):
    rule = RuleNet(_Edge(), 1, [-1.0, 0.0, 1.0], cost=1.0, enter=1.0, exit=0.0)
    assert int(rule(torch.tensor([[edge, weight]])).argmax(dim=1)) == action


def test_rule_long_only_and_traceable():
    rule = RuleNet(_Edge(), 1, [0.0, 1.0], cost=1.0, enter=1.0, exit=0.0)
    obs = torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.5, 1.0], [0.5, 0.0]])
    assert rule(obs).argmax(dim=1).tolist() == [1, 0, 1, 0]
    traced = torch.jit.trace(rule, obs)
    probe = torch.randn(64, 2) * 2
    assert torch.equal(traced(probe), rule(probe))


def test_same_seed_same_weights_other_seed_other_weights(trend_splits):
    cfg = SupervisedConfig(model="mlp", hidden=(8,), horizon=10, **FAST)
    a, b = fit_supervised(trend_splits, cfg), fit_supervised(trend_splits, cfg)
    c = fit_supervised(trend_splits, SupervisedConfig(model="mlp", hidden=(8,), horizon=10, seed=1, **FAST))
    sa, sb, sc = (x.net.state_dict() for x in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_early_stopping_keeps_the_best_validation_epoch(trend_splits):
    learner = fit_supervised(trend_splits, SupervisedConfig(model="linear", horizon=10, **FAST))
    val = [h["val_loss"] for h in learner.history]
    assert learner.best_epoch == 1 + int(np.argmin(val))
    assert len(val) <= FAST["max_epochs"]
    assert len(val) == FAST["max_epochs"] or len(val) - learner.best_epoch == FAST["patience"]


def test_finds_a_strong_trend_out_of_sample(trend_splits):
    "Alpha 0.2: the linear forecast correlates with the test returns and the rule makes money net of costs."
    learner = fit_supervised(trend_splits, SupervisedConfig(model="linear", horizon=10, **FAST))
    assert learner.ic("test") > 0.05
    out = learner.score("test")
    assert out["sharpe"] > 0 and out["trades"] > 0
    assert learner.ignored == [] or all(n in trend_splits.pipeline.names for n in learner.ignored)


def test_placebo_does_not_profit(placebo_splits):
    learner = select_supervised(placebo_splits, SupervisedConfig(model="linear", **FAST), horizons=(5, 30))
    out = learner.score("test")
    assert out["t"] < 2.0, out
    assert learner.config.horizon in (5, 30) and learner.config.enter in (0.5, 1.0, 2.0)


def test_too_few_rows_is_a_clear_error(trend_splits):
    with pytest.raises(ValueError, match="too few rows to fit"):
        fit_supervised(trend_splits, SupervisedConfig(batch_size=10**7))


def test_exports_a_verified_bundle_that_backtests_like_the_env(trend_splits, tmp_path):
    "The bundle loads against the pipeline, acts like the rule, and the backtester fills what the env filled."
    from intraday.backtest import Backtester, bundle_policy
    from intraday.bundle import BundleError, PolicyBundle, verify_bundle
    from intraday.supervised import export_supervised
    from intraday.train import evaluate

    learner = fit_supervised(trend_splits, SupervisedConfig(model="mlp", hidden=(8,), horizon=10, **FAST))
    path = export_supervised(learner, tmp_path / "b", {"metrics": {"note": "test"}})
    assert verify_bundle(path, trend_splits.pipeline) == []
    bundle = PolicyBundle.load(path, trend_splits.pipeline)
    assert bundle.manifest["algorithm"] == "supervised-mlp"
    assert bundle.manifest["hyperparameters"]["horizon"] == 10
    with pytest.raises(BundleError, match="already exists"):
        export_supervised(learner, path)
    full = make_market("trend", days=20, seed=5, alpha=0.2)
    policy, env_actions = learner.policy(), {}

    def recording(obs, bars):
        actions = policy(obs, bars)
        env_actions.update(zip(bars.tolist(), actions.tolist()))
        return actions

    ev = evaluate(recording, trend_splits, "test", curve=True)
    start = full.index.get_loc(trend_splits.bars["test"].index[0])
    res = Backtester(bundle.pipeline(), bundle.fill_model(), bundle.env_settings()).run(
        full, bundle_policy(bundle), start=start, end=start + ev["bars"] + 1
    )
    # the same decision at every bar (fills may split differently: the backtester carries equity across days, so
    # its orders are a little larger and meet the participation cap in other bars)
    test_pos = trend_splits.bars["test"].index.get_indexer(res.decisions.index)
    assert res.decisions["action"].tolist() == [env_actions[i] for i in test_pos]
    assert ev["trades"] > 0
    assert res.equity.iloc[-1] == pytest.approx(ev["equity_curve"][-1], rel=2e-3)
    (path / "policy.pt").write_bytes((path / "policy.pt").read_bytes() + b"x")
    assert any("policy.pt: changed since it was signed" in p for p in verify_bundle(path))
