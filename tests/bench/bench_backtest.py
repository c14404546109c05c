"""Benchmark: event-driven backtest throughput, and the vectorbt fast path against vectorbt's own from_signals.

Run: .venv/bin/python tests/bench/bench_backtest.py [--bars 1000000]
Prints bars per second of the event engine with a rule policy and with a bundle policy, and for SMA-crossover
signals over the bars: vectorbt Portfolio.from_signals (compile time reported apart), our vectorbt fast path
(from_orders with target positions), and the event engine, as ratios to from_signals."""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import vectorbt as vbt

from intraday.backtest import Backtester, SMACross, bundle_policy, sma_targets, vectorbt_portfolio
from intraday.bundle import PolicyBundle, export_bundle
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.fills import FillModel
from intraday.train import Trainer


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--bundle-bars", type=int, default=100_000)
    args = ap.parse_args()
    settings = load_settings(environ={})
    bars = synth_market(days=args.bars / 1440, seed=1)
    simple = FillModel(kyle_lambda=0, participation=0)
    env = settings.env.model_copy(update={"positions": [-0.5, 0.0, 0.5], "episode_len": len(bars)})
    trainer = Trainer(settings, synth_market(days=30, seed=1))
    pipe = trainer.splits.pipeline
    bt = Backtester(pipe, simple, env)
    rule, t_rule = timed(lambda: bt.run(bars, SMACross(env.positions, 20, 100)))
    print(f"event engine, SMA 20/100 rule policy: {len(bars) / t_rule:12,.0f} bars/s ({len(bars):,} bars)")

    small = load_settings(environ={}, train={"total_timesteps": 2048, "n_steps": 128, "batch_size": 128})
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(small, synth_market(days=30, seed=1), Path(d) / "run")
        model = tr.fit()
        path = export_bundle(model, tr.splits.pipeline, tr.splits.fill_model, tr.splits.env, Path(d) / "b")
        bundle = PolicyBundle.load(path)
        part = bars.iloc[: args.bundle_bars]
        _, t_bundle = timed(lambda: Backtester(bundle.pipeline(), simple, env).run(part, bundle_policy(bundle)))
    print(f"event engine, bundle policy:          {len(part) / t_bundle:12,.0f} bars/s ({len(part):,} bars)")

    c = bars["close"]
    fast, slow = c.rolling(20).mean(), c.rolling(100).mean()
    above = (fast > slow).to_numpy()
    entries = pd.Series(above & ~np.r_[False, above[:-1]], index=bars.index)
    exits = pd.Series(~above & np.r_[False, above[:-1]], index=bars.index)
    kw = {"fees": simple.taker_bps / 1e4, "slippage": simple.half_spread_bps / 1e4, "freq": "1min"}
    _, t_compile = timed(lambda: vbt.Portfolio.from_signals(c.iloc[:1000], entries.iloc[:1000], exits.iloc[:1000],
                                                            short_entries=exits.iloc[:1000],
                                                            short_exits=entries.iloc[:1000], **kw).value())  # fmt: skip
    _, t_signals = timed(lambda: vbt.Portfolio.from_signals(c, entries, exits, short_entries=exits,
                                                            short_exits=entries, **kw).value())  # fmt: skip
    targets = sma_targets(bars, [(20, 100)], env.positions)[(20, 100)]
    vectorbt_portfolio(bars.iloc[:1000], targets.iloc[:1000], simple).value()  # compile
    _, t_fast = timed(lambda: vectorbt_portfolio(bars, targets, simple).value())
    print(f"SMA crossover over {len(bars):,} bars (vectorbt first-call compile {t_compile:.2f} s, excluded)")
    print(f"  vectorbt Portfolio.from_signals      {t_signals:8.3f} s   1.00x")
    print(f"  our vectorbt fast path (from_orders) {t_fast:8.3f} s   {t_fast / t_signals:5.2f}x  (overhead ratio)")
    print(f"  event-driven engine                  {t_rule:8.3f} s   {t_rule / t_signals:5.2f}x")


if __name__ == "__main__":
    main()
