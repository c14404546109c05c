"""Benchmark: batch-1 decision latency of a PolicyBundle against the eager SB3 model it was exported from.

Run: .venv/bin/python tests/bench/bench_bundle.py
Trains a tiny PPO (default 64x64 MLP) on the synthetic env, exports and loads a bundle, then times, one thread,
real calls on validation rows: `bundle.act(raw_features, position_state)` (normalisation included) against
`model.predict(obs, deterministic=True)` (on an already normalised observation). Prints p50 and p99 in
microseconds, their ratios, and the goal (bundle p99 <= 100 us)."""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from intraday.bundle import PolicyBundle, export_bundle
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs

N_CALLS = 20_000
WARM_UP = 1_000
GOAL_P99_US = 100.0


def latencies_us(call, rows: int, n: int = N_CALLS) -> np.ndarray:
    "Wall time of each of `n` calls of call(i), cycling over `rows` inputs, after a warm-up, in microseconds."
    for i in range(WARM_UP):
        call(i % rows)
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        call(i % rows)
        out[i] = clock() - t0
    return out / 1e3


def main() -> None:
    torch.set_num_threads(1)
    bars = synth_market(days=12, seed=9)
    splits = build_envs(load_settings(environ={}, env={"episode_len": 200}), bars)
    pipe = splits.pipeline
    model = PPO("MlpPolicy", splits.make_vec_env("train", 4, seed=0), n_steps=64, batch_size=64, seed=0, device="cpu")
    model.learn(1024)

    raw = pipe.transform(bars).loc[splits.bars["val"].index].to_numpy()
    rng = np.random.default_rng(0)
    n = len(raw)
    state = np.column_stack([rng.choice([-1.0, 0.0, 1.0], n), rng.normal(0, 0.01, n), rng.random(n)])
    obs = np.hstack([np.nan_to_num(pipe.normalize(raw)), state]).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        path = export_bundle(model, pipe, splits.fill_model, splits.env, Path(tmp) / "ppo")
        bundle = PolicyBundle.load(path, pipeline=pipe)
        ours_actions = np.array([bundle.act(raw[i], state[i]) for i in range(n)])
        sb3_actions = model.predict(obs, deterministic=True)[0]
        agree = float((ours_actions == sb3_actions).mean())

        ours = latencies_us(lambda i: bundle.act(raw[i], state[i]), n)
        sb3 = latencies_us(lambda i: model.predict(obs[i], deterministic=True), n)

    p_ours, p_sb3 = np.percentile(ours, [50, 99]), np.percentile(sb3, [50, 99])
    print(f"batch-1 decision latency, {N_CALLS:,} calls each, torch threads = {torch.get_num_threads()}")
    print(f"  actions agree on {n:,} validation rows: {agree:.2%}")
    print(f"  {'':34s} {'p50 us':>9s} {'p99 us':>9s}")
    print(f"  {'SB3 model.predict (eager)':34s} {p_sb3[0]:9.1f} {p_sb3[1]:9.1f}")
    print(f"  {'PolicyBundle.act (TorchScript)':34s} {p_ours[0]:9.1f} {p_ours[1]:9.1f}")
    print(f"  speed-up vs SB3                    {p_sb3[0] / p_ours[0]:8.2f}x {p_sb3[1] / p_ours[1]:8.2f}x")
    verdict = "met" if p_ours[1] <= GOAL_P99_US else "NOT met"
    print(f"  goal: bundle p99 <= {GOAL_P99_US:.0f} us: {verdict} ({p_ours[1]:.1f} us)")


if __name__ == "__main__":
    main()
