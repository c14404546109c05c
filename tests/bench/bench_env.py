"""Benchmark: IntradayEnv.step against CartPole-v1, the batched env against SyncVectorEnv of IntradayEnv, and the
basket env (5 symbols) against the single-asset env per symbol.

Run: .venv/bin/python tests/bench/bench_env.py
Prints the step-time ratio to CartPole (goal <= 3x), the batched speed-up (goal >= 4x steps per second) and the
basket env's bars per second per symbol as a fraction of the single-asset env's bars per second (issue 23's goal:
>= 0.5 at 5 symbols), both batched (64 envs) and single, in alternating rounds (best and median)."""

import statistics
import time

import gymnasium as gym
import numpy as np

from intraday.basket import build_basket_envs
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs
from intraday.panel import Basket


def steps_per_second(step, n_steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    return n_steps / (time.perf_counter() - t0)


def single(env, n_steps: int) -> float:
    "Steps per second of a gymnasium env under a fixed random action sequence, resetting at episode end."
    env.reset(seed=0)
    shape = env.action_space.shape  # () for one symbol, (n,) for a basket
    n_act = env.action_space.n if not shape else env.action_space.nvec[0]
    acts = np.random.default_rng(0).integers(0, n_act, (n_steps, *shape))
    it = iter(acts)

    def step():
        _, _, term, trunc, _ = env.step(next(it) if shape else int(next(it)))
        if term or trunc:
            env.reset()

    return steps_per_second(step, n_steps)


def main() -> None:
    settings = load_settings(environ={})
    splits = build_envs(settings, synth_market(days=30, seed=1))
    n = 50_000
    ours = single(splits.make_env("train"), n)
    cart = single(gym.make("CartPole-v1"), n)
    print(f"single env, {n:,} steps")
    print(f"  CartPole-v1      {1e6 / cart:7.2f} us/step")
    print(f"  IntradayEnv      {1e6 / ours:7.2f} us/step")
    print(f"  step-time ratio  {cart / ours:7.2f}x CartPole   (goal <= 3x)")

    n_envs, n_steps = 64, 2_000
    vec = splits.make_vec_env("train", n_envs=n_envs, seed=0)
    vec.reset()
    acts = np.random.default_rng(1).integers(0, 3, (n_steps, n_envs))
    it = iter(acts)
    batched = steps_per_second(lambda: vec.step(next(it)), n_steps) * n_envs
    sync = gym.vector.SyncVectorEnv([splits.make_env for _ in range(n_envs)])
    sync.reset(seed=0)
    it = iter(acts)
    synced = steps_per_second(lambda: sync.step(next(it)), n_steps // 4) * n_envs
    print(f"{n_envs} envs")
    print(f"  SyncVectorEnv(IntradayEnv)  {synced:12,.0f} env-steps/s")
    print(f"  IntradayVecEnv              {batched:12,.0f} env-steps/s")
    print(f"  speed-up                    {batched / synced:12.1f}x   (goal >= 4x)")
    basket(settings, splits)


def batched_rate(vec, acts) -> float:
    "Env-steps per second of a VecEnv stepping through `acts` (steps x envs [x symbols])."
    it = iter(acts)
    return steps_per_second(lambda: vec.step(next(it)), len(acts)) * vec.num_envs


def basket(settings, splits, rounds: int = 3) -> None:
    "The 5-symbol basket env against the single-asset env: bars per second per symbol, batched and single."
    names = ("AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT", "EEE/USDT")
    panel = Basket("rotation", betas=(1.0, 0.8, 1.2, 0.9, 1.1), symbols=names).generate(days=30, seed=1)
    bsplits = build_basket_envs(settings, panel)
    n_envs, n_steps = 64, 2_000
    rng = np.random.default_rng(2)
    acts1, acts5 = rng.integers(0, 3, (n_steps, n_envs)), rng.integers(0, 3, (n_steps, n_envs, 5))
    one, five = splits.make_vec_env("train", n_envs=n_envs, seed=0), bsplits.make_vec_env("train", n_envs, seed=0)
    one.reset(), five.reset()
    b1, b5, s1, s5 = [], [], [], []
    for _ in range(rounds):  # alternate: the machine's noise falls on both
        b1.append(batched_rate(one, acts1))
        b5.append(batched_rate(five, acts5) * 5)  # bars x symbols
        s1.append(single(splits.make_env("train"), 20_000))
        s5.append(single(bsplits.make_env("train"), 20_000) * 5)
    print(f"basket env, 5 symbols ({rounds} rounds, best / median)")
    for what, a, b in (("batched, 64 envs", b1, b5), ("single env", s1, s5)):
        print(f"  {what}: single-asset {max(a):,.0f} / {statistics.median(a):,.0f} bars/s; basket "
              f"{max(b):,.0f} / {statistics.median(b):,.0f} symbol-bars/s; ratio {max(b) / max(a):.2f} / "
              f"{statistics.median(b) / statistics.median(a):.2f} (goal >= 0.5)")  # fmt: skip


if __name__ == "__main__":
    main()
