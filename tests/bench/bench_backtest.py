"""Benchmark: the event engine (compiled and Python) against vectorbt and backtesting.py on a year of minute bars.

Run: .venv/bin/python tests/bench/bench_backtest.py [--rounds 5] [--python-bars 100000]

The issue-16 table in one process, on `intraday data synth --days 365 --seed 3 --alpha 0` (525,600 bars): an SMA
20/100 long/short crossover decided at the close and filled at the next open, no costs, in
- vectorbt `Portfolio.from_signals` on numpy arrays (its first call, which compiles, is timed apart and excluded),
- backtesting.py (`Backtest.run` with a Strategy whose `next` is the Python rule, indicators precomputed by `I`),
- intraday `Backtester.run` + `SMACross`, compiled engine (`engine="auto"`),
and the bundle case: a PPO bundle (25 features, the demo's network shape) backtested over the same year by the
compiled engine (batch features + the network in the loop), with its own fill model.
These four are timed in alternating rounds (best and median printed). The Python engine (the reference loop)
runs once on the first --python-bars bars for both policies (a full year takes minutes); its bars/s is printed.
Ratios: other engine's seconds / ours (> 1: intraday is faster). Trade counts are printed: all engines must make
the same trades for the comparison to mean anything."""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import backtesting.backtesting
import numpy as np
import pandas as pd
import vectorbt as vbt
from backtesting import Backtest, Strategy

from intraday.backtest import Backtester, SMACross, bundle_policy, sma_targets, vectorbt_portfolio
from intraday.bundle import PolicyBundle, export_bundle
from intraday.config import EnvSettings, load_settings
from intraday.data import synth_market
from intraday.fills import FillModel
from intraday.train import Trainer

FAST, SLOW = 20, 100
backtesting.backtesting._tqdm = lambda seq, **_: seq  # no progress bar in the peer's loop (spares it the overhead)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def side(close: pd.Series) -> np.ndarray:
    "+1 where the fast SMA is above the slow one, -1 below or equal, 0 before the slow window fills."
    f, s = close.rolling(FAST).mean().to_numpy(), close.rolling(SLOW).mean().to_numpy()
    return np.where(np.isnan(s), 0, np.where(f > s, 1, -1))


def run_vectorbt(bars: pd.DataFrame):
    "from_signals: entries at the decision close, executed at the next open (signals shifted one bar)."
    s = side(bars["close"])
    prev = np.r_[0, s[:-1]]
    long_in = np.r_[False, ((s == 1) & (prev != 1))[:-1]]
    short_in = np.r_[False, ((s == -1) & (prev != -1))[:-1]]
    # numpy inputs: with the pandas Series (a tz-aware 525,600-bar index) from_signals + value() take ~20 s here
    # instead of ~0.2 s, in vectorbt's wrapper rather than its kernels; the peer gets its fastest call
    close, opens = bars["close"].to_numpy(), bars["open"].to_numpy()
    pf = vbt.Portfolio.from_signals(
        close, long_in, short_entries=short_in, price=opens, init_cash=10_000.0, freq="1min"
    )
    pf.value()
    return int(pf.orders.count())


class SmaCross(Strategy):
    "The same crossover in backtesting.py: long above, short below, reversing with exclusive orders."

    def init(self):
        close = pd.Series(self.data.Close)
        self.fast = self.I(lambda: close.rolling(FAST).mean().to_numpy())
        self.slow = self.I(lambda: close.rolling(SLOW).mean().to_numpy())

    def next(self):
        f, s = self.fast[-1], self.slow[-1]
        if s != s:
            return
        if f > s:
            if not self.position.is_long:
                self.buy()
        elif not self.position.is_short:
            self.sell()


def run_backtesting(data: pd.DataFrame):
    stats = Backtest(data, SmaCross, cash=1e9, commission=0.0, exclusive_orders=True, finalize_trades=True).run()
    return int(len(stats["_trades"]))  # trades (the last one closed at the end by finalize_trades)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python-bars", type=int, default=100_000)
    args = ap.parse_args()
    bars = synth_market(days=365, seed=3, alpha=0.0)
    n = len(bars)
    env = EnvSettings(
        positions=[-1.0, 0.0, 1.0], episode_len=n, force_flat=False, borrow_apr=0.0
    )  # the peers charge no borrow
    small = load_settings(environ={}, train={"total_timesteps": 2048, "n_steps": 128, "batch_size": 128})
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(small, synth_market(days=30, seed=1), Path(d) / "run")
        model = tr.fit()
        bundle = PolicyBundle.load(export_bundle(model, tr.splits.pipeline, tr.splits.fill_model, tr.splits.env,
                                                 Path(d) / "b"))  # fmt: skip
    rule_bt = Backtester(bundle.pipeline(), FillModel.frictionless(), env)
    benv = EnvSettings(positions=bundle.positions, episode_len=1440)
    bundle_bt = Backtester(bundle.pipeline(), bundle.fill_model(), benv)
    data = bars.rename(columns=str.capitalize)
    simple = FillModel.frictionless()
    targets = sma_targets(bars, [(FAST, SLOW)], env.positions)[(FAST, SLOW)]

    # first calls: vectorbt compiles its kernels; the compiled engine loads (or compiles) its numba cache
    _, t_vbt_first = timed(lambda: run_vectorbt(bars.iloc[:5000]))
    _, t_ours_first = timed(lambda: rule_bt.run(bars.iloc[:5000], SMACross(env.positions, FAST, SLOW), start=0))
    _, t_bundle_first = timed(lambda: bundle_bt.run(bars.iloc[:5000], bundle_policy(bundle)))

    cases = {
        "vectorbt from_signals": lambda: run_vectorbt(bars),
        "backtesting.py": lambda: run_backtesting(data),
        "our vectorbt path (from_orders)": lambda: int(vectorbt_portfolio(bars, targets, simple, env).orders.count()),
        "intraday compiled, SMACross": lambda: rule_bt.run(bars, SMACross(env.positions, FAST, SLOW), start=0),
        "intraday compiled, bundle": lambda: bundle_bt.run(bars, bundle_policy(bundle)),
    }
    times = {k: [] for k in cases}
    outs = {}
    for r in range(args.rounds):  # alternating rounds: each engine once per round, order rotated
        names = list(cases)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            outs[name], t = timed(cases[name])
            times[name].append(t)
    rule, bund = outs["intraday compiled, SMACross"], outs["intraday compiled, bundle"]
    assert rule.engine == "compiled" and bund.engine == "compiled", (rule.engine_note, bund.engine_note)

    m = args.python_bars
    py_rule, t_py_rule = timed(
        lambda: rule_bt.run(bars.iloc[:m], SMACross(env.positions, FAST, SLOW), start=0, engine="python")
    )
    py_bundle, t_py_bundle = timed(lambda: bundle_bt.run(bars.iloc[:m], bundle_policy(bundle), engine="python"))
    same_rule = rule_bt.run(bars.iloc[:m], SMACross(env.positions, FAST, SLOW), start=0).fills.equals(py_rule.fills)
    same_bundle = bundle_bt.run(bars.iloc[:m], bundle_policy(bundle)).fills.equals(py_bundle.fills)

    trades = {k: v if isinstance(v, int) else len(v.fills) for k, v in outs.items()}
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n:,} one-minute bars (synth --days 365 --seed 3 --alpha 0), SMA {FAST}/{SLOW} long/short, no costs; "
          f"{args.rounds} alternating rounds")  # fmt: skip
    print(f"first calls (excluded): vectorbt {t_vbt_first:.2f} s, intraday compiled rule {t_ours_first:.2f} s, "
          f"bundle {t_bundle_first:.2f} s (numba cache load or compile)")  # fmt: skip
    print(
        f"{'engine':32s} {'best s':>8s} {'median s':>9s} {'bars/s (best)':>14s} {'bars/s (median)':>16s} {'trades':>7s}"
    )
    for k in cases:
        print(f"{k:32s} {best[k]:8.3f} {med[k]:9.3f} {n / best[k]:14,.0f} {n / med[k]:16,.0f} {trades[k]:7d}")
    print(f"{'intraday python loop, SMACross':32s} {t_py_rule * n / m:8.3f} {'':9s} {m / t_py_rule:14,.0f} "
          f"{'':16s} {'':7s}  (1 round on {m:,} bars, seconds scaled to the year)")  # fmt: skip
    print(f"{'intraday python loop, bundle':32s} {t_py_bundle * n / m:8.3f} {'':9s} {m / t_py_bundle:14,.0f} "
          f"{'':16s} {'':7s}  (1 round on {m:,} bars, seconds scaled to the year)")  # fmt: skip
    print(f"compiled == python on those {m:,} bars: rule fills {same_rule}, bundle fills {same_bundle}")
    print(f"bundle: {bund.engine_note}")
    r, b = "intraday compiled, SMACross", "intraday compiled, bundle"
    for peer in ("vectorbt from_signals", "backtesting.py"):
        print(f"ratio {peer} / compiled rule:   best {best[peer] / best[r]:6.2f}x  median {med[peer] / med[r]:6.2f}x")
        print(f"ratio {peer} / compiled bundle: best {best[peer] / best[b]:6.2f}x  median {med[peer] / med[b]:6.2f}x")
    print(f"ratio python loop / compiled: rule {t_py_rule * n / m / med[r]:6.1f}x, bundle "
          f"{t_py_bundle * n / m / med[b]:6.1f}x (python seconds scaled to the year, compiled median)")  # fmt: skip


if __name__ == "__main__":
    main()
