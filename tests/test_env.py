import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from intraday.config import EnvSettings, load_settings
from intraday.data import synth_market
from intraday.env import IntradayEnv, build_envs
from intraday.fills import FillModel


def flat_bars(n=60, price=100.0, volume=1000.0):
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="ts")
    return pd.DataFrame({"open": price, "high": price, "low": price, "close": price, "volume": volume}, index=ts)


@pytest.fixture(scope="module")
def splits():
    settings = load_settings(environ={}, env={"episode_len": 200})
    return build_envs(settings, synth_market(days=12, seed=9, alpha=0.05))


def run(env, actions, start):
    obs, _ = env.reset(options={"start": start})
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            break
    return out


def test_passes_gymnasium_and_sb3_checkers_without_warnings(splits):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(splits.make_env("train"), skip_render_check=True)
        sb3_check_env(splits.make_env("val"))
    assert [str(w.message) for w in caught if "observation" in str(w.message).lower()] == []
    env = splits.make_env("test")
    assert env.action_space.n == 3 and env.observation_space.shape == (len(splits.pipeline.names) + 3,)
    assert env.observation_space.high[0] == splits.pipeline.clip and env.observation_space.high[-1] == 1.0
    obs, _ = env.reset(seed=1)
    for _ in range(300):  # every observation lies inside the declared bounds, also with a position on
        assert env.observation_space.contains(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()


def test_leaked_future_would_profit_but_pipeline_features_hold_no_future():
    "An agent seeing bar t+1 gets rich; the real features carry no such information (martingale market)."
    settings = load_settings(environ={}, env={"episode_len": 1440}, data={"alpha": 0.0})
    bars = synth_market(days=20, seed=12, alpha=0.0)
    splits = build_envs(settings, bars)
    test_bars = splits.bars["test"]
    nxt = np.log(test_bars.close).diff().shift(-1).fillna(0.0).to_numpy()
    leak = np.sign(nxt)[:, None]
    leaky_env = IntradayEnv(test_bars, leak, splits.fill_model, settings.env)
    policy = lambda x: 2 if x > 0 else 0  # noqa: E731
    obs, _ = leaky_env.reset(options={"start": 0})
    total = 0.0
    for _ in range(1440):
        obs, r, term, trunc, _ = leaky_env.step(policy(obs[0]))
        total += r
    assert total > 0.2  # > 20 % log return in a day, after costs
    real = splits.features["test"]
    corr = [abs(np.corrcoef(real[:-1, k], nxt[:-1])[0, 1]) for k in range(real.shape[1])]
    assert max(corr) < 0.05, dict(zip(splits.pipeline.names, corr, strict=True))
    env = splits.make_env("test")
    k = splits.pipeline.names.index("ret_1")
    obs, _ = env.reset(options={"start": 0})
    same_rule = 0.0
    for _ in range(1440):
        obs, r, term, trunc, _ = env.step(policy(obs[k]))
        same_rule += r
    assert same_rule < 0.02


def test_vec_env_equals_single_envs(splits):
    n, starts = 3, [5, 50, 120]
    vec = splits.make_vec_env("val", n_envs=n, seed=0)
    obs = vec.reset_at(starts)
    singles = [splits.make_env("val") for _ in range(n)]
    firsts = [e.reset(options={"start": s})[0] for e, s in zip(singles, starts, strict=True)]
    np.testing.assert_array_equal(obs, np.array(firsts))
    rng = np.random.default_rng(3)
    for _ in range(150):
        acts = rng.integers(0, 3, n)
        vobs, vr, vdone, vinfo = vec.step(acts)
        for i, e in enumerate(singles):
            o, r, term, trunc, info = e.step(int(acts[i]))
            assert vr[i] == np.float32(r) and not vdone[i]
            np.testing.assert_array_equal(vobs[i], o)
            assert vinfo[i]["equity"] == info["equity"]


def test_latency_delays_the_fill(splits):
    bars = splits.bars["val"]
    fm = FillModel(latency_bars=3)
    env = IntradayEnv(bars, splits.features["val"], fm, splits.env)
    steps = run(env, [2, 2, 2, 2], start=10)
    fills = [s[4]["fill_qty"] for s in steps]
    assert fills[0] == fills[1] == 0 and fills[2] > 0 and fills[3] == 0
    qty = 10_000 / bars.close.iloc[10]
    expected = fm.fill(qty, bars.iloc[13])
    assert steps[2][4]["fill_price"] == pytest.approx(expected.price, rel=1e-12)


def test_participation_cap_spreads_the_order_over_bars():
    fm = FillModel(participation=0.02, half_spread_bps=0, taker_bps=0, kyle_lambda=0)
    env = IntradayEnv(flat_bars(volume=1000.0), np.zeros((60, 1)), fm, EnvSettings(episode_len=20, force_flat=False))
    steps = run(env, [2] * 8, start=0)
    positions = [s[4]["position"] for s in steps]
    assert positions == [20.0, 40.0, 60.0, 80.0, 100.0, 100.0, 100.0, 100.0]


def test_reward_shaping_subtracts_exact_penalties(splits):
    bars, feats = splits.bars["test"], splits.features["test"]
    plain = IntradayEnv(bars, feats, splits.fill_model, EnvSettings(episode_len=100))
    shaped = IntradayEnv(bars, feats, splits.fill_model,
                         EnvSettings(episode_len=100, turnover_penalty=0.5, drawdown_penalty=2.0))  # fmt: skip
    acts = [2, 2, 2, 0, 0, 1, 2, 2] * 5
    a, b = run(plain, acts, 7), run(shaped, acts, 7)
    peak, prev_dd, eq_prev = 10_000.0, 0.0, 10_000.0
    for (_, r1, *_, i1), (_, r2, *_, i2) in zip(a, b, strict=True):
        assert i1["equity"] == i2["equity"]
        peak = max(peak, i1["equity"])
        dd = 1 - i1["equity"] / peak
        expect = 0.5 * abs(i1["fill_qty"] * i1["fill_price"]) / eq_prev + 2.0 * max(0.0, dd - prev_dd)
        assert r1 - r2 == pytest.approx(expect, abs=1e-12)
        prev_dd, eq_prev = dd, i1["equity"]


def test_long_only_and_no_forced_flat(splits):
    env = IntradayEnv(splits.bars["val"], splits.features["val"], splits.fill_model,
                      EnvSettings(positions=[0, 1], episode_len=30, force_flat=False))  # fmt: skip
    assert env.action_space.n == 2
    steps = run(env, [1] * 30, start=0)
    assert steps[-1][3] and steps[-1][4]["position"] > 0
    assert all(s[4]["position"] >= 0 for s in steps)


def test_bust_terminates():
    bars = flat_bars(n=30)
    bars.iloc[5:, :4] = 85.0
    bars.iloc[5, 0], bars.iloc[5, 1] = 100.0, 100.0
    env = IntradayEnv(bars, np.zeros((30, 1)), FillModel.frictionless(), EnvSettings(positions=[0, 10], episode_len=20))
    steps = run(env, [1] * 20, start=0)
    assert steps[-1][2] and steps[-1][4]["equity"] < 0 and steps[-1][1] < -10


def test_builder_splits_embargo_and_train_only_stats():
    settings = load_settings(environ={}, env={"episode_len": 100})
    bars = synth_market(days=10, seed=2)
    s = build_envs(settings, bars)
    r = s.ranges()
    assert s.embargo >= s.pipeline.warmup == 1439
    gap1 = bars.index.get_loc(r["val"][0]) - bars.index.get_loc(r["train"][1]) - 1
    gap2 = bars.index.get_loc(r["test"][0]) - bars.index.get_loc(r["val"][1]) - 1
    assert gap1 == gap2 == s.embargo
    assert all(np.isfinite(s.features[k]).all() for k in ("val", "test"))
    changed = bars.copy()
    changed.iloc[int(len(bars) * 0.6) :, :4] *= 2  # everything after the training window
    assert build_envs(settings, changed).pipeline.stats == s.pipeline.stats  # fitted on train only
    no_val = build_envs(load_settings(environ={}, env={"episode_len": 100, "val": 0}), bars)
    assert set(no_val.bars) == {"train", "test"}
    with pytest.raises(ValueError, match="too few"):
        build_envs(settings, bars.iloc[:3000])
