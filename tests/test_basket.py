"""The basket environment: checkers, one step == the portfolio backtester's bar, caps, gaps, auto-reset, and PPO
trained on it by the same Trainer."""

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from loguru import logger
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from intraday.basket import build_basket_envs
from intraday.config import load_settings
from intraday.panel import Basket, make_panel
from intraday.portfolio import PortfolioBacktester, TargetWeights
from intraday.train import Trainer, evaluate, model_policy

BASKET = Basket("rotation", alpha=0.1)
PANEL = BASKET.generate(days=8, seed=4)
SETTINGS = load_settings(env={"episode_len": 240})


@pytest.fixture(scope="module")
def splits():
    return build_basket_envs(SETTINGS, PANEL)


@pytest.mark.parametrize("continuous", [False, True])
def test_checkers(continuous):
    env = build_basket_envs(SETTINGS, PANEL, continuous=continuous).make_env("val")
    gym_check_env(env.unwrapped)
    sb3_check_env(env)


def test_a_step_is_the_portfolio_backtesters_bar(splits):
    env, rng = splits.make_env("train"), np.random.default_rng(1)
    start = splits.episode_starts("train")[1]
    env.reset(options={"start": start})
    levels = np.asarray(SETTINGS.env.positions)
    bars = splits.bars["train"]
    w = pd.DataFrame(np.nan, bars.index, splits.symbols)
    last, equity, act = np.zeros(3), [], np.zeros(3, dtype=np.int64)
    for k in range(SETTINGS.env.episode_len):
        act = rng.integers(0, 3, 3) if k % 5 == 0 else act  # held between draws
        want = levels[act]
        want = want * min(1.0, 1.0 / max(np.abs(want).sum(), 1e-12))  # the gross cap at 1
        if k >= SETTINGS.env.episode_len - 1:
            want = np.zeros(3)  # the env's forced flat at the episode's end
        w.iloc[start + k] = np.where(want == last, np.nan, want)  # unchanged: keep the target (the env's rule)
        last = want
        _, _, _, trunc, info = env.step(act)
        equity.append(info["equity"])
    assert trunc
    sub = make_panel({s: pd.DataFrame(splits.mkt["train"][:, a], bars.index, ["open", "high", "low", "close", "volume"])
                      for a, s in enumerate(splits.symbols)})  # fmt: skip
    bt = PortfolioBacktester(dict(zip(splits.symbols, splits.fill_models)), SETTINGS.env)
    r = bt.run(sub, TargetWeights(w), start=start, end=start + SETTINGS.env.episode_len + 1)
    np.testing.assert_array_equal(np.array(equity), r.equity.iloc[1:].to_numpy())  # to the bit
    assert r.positions.iloc[-1].abs().sum() == 0 and len(r.fills) > 20


def test_caps_scale_the_continuous_weights():
    sp = build_basket_envs(SETTINGS, PANEL, continuous=True, gross=0.6, net=0.2)
    env = sp.make_env("val")
    env.reset(options={"start": sp.episode_starts("val")[0]})
    for _ in range(3):
        obs, *_ = env.step(np.array([1.0, 1.0, -0.5], dtype=np.float32))
    w = obs.reshape(3, -1)[:, len(sp.names)]
    assert np.abs(w).sum() <= 0.6 * 1.01 and abs(w.sum()) <= 0.2 * 1.01 and w[0] > 0 > w[2]


def test_gaps_are_left_out_and_said():
    holes = {s: (b.drop(b.index[3000:3010]) if s == "BBB/USDT" else b) for s, b in PANEL.bars.items()}
    said = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="WARNING")
    logger.enable("intraday")  # the library is silent until a program sets its logging up
    try:
        sp = build_basket_envs(SETTINGS, make_panel(holes))
    finally:
        logger.disable("intraday")
        logger.remove(sink)
    assert sum(len(b) for b in sp.bars.values()) + 2 * sp.embargo == len(PANEL.index) - 10
    assert not any(PANEL.index[3000:3010].isin(b.index).any() for b in sp.bars.values())
    assert any("10 bars where a symbol has none are left out" in m for m in said)


def test_vec_env_auto_resets_and_the_trainer_trains_ppo(splits, tmp_path):
    vec = splits.make_vec_env("train", n_envs=4, seed=0)
    vec.reset()
    for _ in range(SETTINGS.env.episode_len):
        obs, rewards, dones, infos = vec.step(np.ones((4, 3), dtype=np.int64))
    assert dones.all() and all("terminal_observation" in i for i in infos) and np.isfinite(rewards).all()
    s = load_settings(env={"episode_len": 240}, train={"total_timesteps": 4096, "eval_every": 2048, "n_envs": 4})
    trainer = Trainer(s, pd.concat(PANEL.bars.values()), tmp_path / "run", splits=splits)
    model = trainer.fit()
    metrics = trainer.finish()
    assert set(metrics) >= {"train", "val", "test"} and metrics["num_timesteps"] >= 4096
    assert metrics["test"]["episodes"] == len(splits.episode_starts("test")) and metrics["test"]["trades"] > 0
    again = evaluate(model_policy(trainer.best_model()), splits, "test")
    assert again["sharpe"] == pytest.approx(metrics["test"]["sharpe"])
    assert model.action_space.nvec.tolist() == [3, 3, 3]


def test_the_ranker_finds_a_strong_rotation_and_stays_out_of_a_placebo():
    from intraday.basket import rank_policy, select_ranker
    from intraday.markets import targets_policy
    from intraday.supervised import score_policy

    out = {}
    for alpha in (0.2, 0.0):
        basket = Basket("rotation", alpha=alpha)
        panel = basket.generate(days=8, seed=4)
        sp = build_basket_envs(SETTINGS, panel)
        ranker = select_ranker(sp, horizons=(15, 60))
        w = basket.oracle(panel).reindex(sp.bars["test"].index).to_numpy()
        levels = SETTINGS.env.positions
        out[alpha] = {"ranker": score_policy(rank_policy(ranker, sp), sp, "test"),
                      "oracle": score_policy(targets_policy(levels, np.sign(w)), sp, "test"),
                      "equal": score_policy(targets_policy(levels, np.ones_like(w)), sp, "test")}  # fmt: skip
    strong, placebo = out[0.2], out[0.0]
    assert strong["ranker"]["sharpe"] > 0.5 * strong["oracle"]["sharpe"] > 0 and strong["ranker"]["t"] > 2
    assert strong["ranker"]["sharpe"] > strong["equal"]["sharpe"]
    assert placebo["ranker"]["t"] < 2 and placebo["oracle"]["sharpe"] < 0  # nothing to find, and it finds nothing
