"""Benchmark: IntradayEnv.step against CartPole-v1, and the batched env against SyncVectorEnv of IntradayEnv.

Run: .venv/bin/python tests/bench/bench_env.py
Prints the step-time ratio to CartPole (goal <= 3x) and the batched speed-up (goal >= 4x steps per second)."""

import time

import gymnasium as gym
import numpy as np

from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs


def steps_per_second(step, n_steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    return n_steps / (time.perf_counter() - t0)


def single(env, n_steps: int) -> float:
    "Steps per second of a gymnasium env under a fixed random action sequence, resetting at episode end."
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, env.action_space.n, n_steps)
    it = iter(acts)

    def step():
        _, _, term, trunc, _ = env.step(int(next(it)))
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


if __name__ == "__main__":
    main()
