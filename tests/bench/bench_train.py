"""Benchmark: stable-baselines3 training throughput on IntradayVecEnv against CartPole-v1, same algorithm and settings.

Run: .venv/bin/python tests/bench/bench_train.py [--algo PPO] [--steps 50000]
Prints frames per second of both and the ratio (goal >= 0.8x)."""

import argparse
import time

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv

from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs
from intraday.train import ALGOS, make_deterministic


def fps(algo: str, env, steps: int, n_steps: int) -> float:
    kw = {"n_steps": n_steps} if algo != "DQN" else {"learning_starts": 1000}
    model = ALGOS[algo]("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [64, 64]}, **kw)
    model.learn(min(steps // 10, 2048))  # warm up (numba compile, torch first calls)
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", default="PPO", choices=sorted(ALGOS))
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--n-envs", type=int, default=8)
    args = ap.parse_args()
    make_deterministic(0)
    splits = build_envs(load_settings(environ={}), synth_market(days=30, seed=1))
    ours = fps(args.algo, splits.make_vec_env("train", n_envs=args.n_envs, seed=0), args.steps, 256)
    cart = fps(args.algo, DummyVecEnv([lambda: gym.make("CartPole-v1")] * args.n_envs), args.steps, 256)
    print(f"{args.algo}, {args.n_envs} envs, {args.steps:,} steps, one torch thread")
    print(f"  CartPole-v1 (DummyVecEnv)  {cart:10,.0f} frames/s")
    print(f"  IntradayVecEnv             {ours:10,.0f} frames/s")
    print(f"  ratio                      {ours / cart:10.2f}x   (goal >= 0.8x)")


if __name__ == "__main__":
    main()
