"""Benchmark: the compiled portfolio backtest against vectorbt's grouped, cash-sharing `from_orders` on the same orders.

Run: .venv/bin/python tests/bench/bench_portfolio.py [--days 365] [--symbols 5] [--rounds 5]

Issue 23's speed goal: the compiled portfolio backtest >= 1x vectorbt's grouped `from_orders` (5 assets, a year of
1m bars), on the same weights and costs: a rotation basket (`Basket("rotation")`, seed 3) and two policies,
cross-sectional momentum (top 2 of 5 over 4 h, rebalanced hourly) and the planted oracle (a decision every bar,
tens of thousands of orders). Both engines are warmed up first (numba compiles; vectorbt compiles its kernels), then
timed in alternating rounds; best and median printed, and the ratio vectorbt seconds / ours (> 1: intraday is
faster). Each round checks the two equity curves agree to 1e-9 (max relative difference printed; the order counts
are printed too): the comparison means nothing otherwise. vectorbt is timed as a user calls it, DataFrames in and
the equity out (`from_orders(...).value()`), which includes its pandas work. The Python engine runs once on the
first --python-bars bars."""

import argparse
import statistics
import time

import numpy as np

from intraday.config import EnvSettings
from intraday.fills import FillModel
from intraday.panel import Basket
from intraday.portfolio import PortfolioBacktester, TargetWeights, vectorbt_basket, xs_momentum

SYMBOLS = ("AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT", "EEE/USDT", "FFF/USDT", "GGG/USDT", "HHH/USDT")


def timed(fn):
    "Seconds of one call, and its result."
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--symbols", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python-bars", type=int, default=50_000)
    args = ap.parse_args()
    n = args.symbols
    basket = Basket("rotation", alpha=0.05, betas=tuple(np.linspace(0.8, 1.2, n)), symbols=SYMBOLS[:n])
    secs, panel = timed(lambda: basket.generate(days=args.days, seed=3))
    print(f"{n} symbols x {len(panel.index):,} bars (generated in {secs:.1f} s)")
    env = EnvSettings(force_flat=False, max_gap="", account="margin", borrow_apr=0.0)
    fm = FillModel(taker_bps=2.0, half_spread_bps=1.0, kyle_lambda=0, participation=0)
    bt = PortfolioBacktester(fm, env)
    policies = {"momentum": xs_momentum(panel, lookback=240, every=60, top=2, gross=0.95),
                "oracle": TargetWeights(basket.oracle(panel) * 0.95)}  # fmt: skip
    for name, pol in policies.items():
        ours = lambda pol=pol: bt.run(panel, pol, engine="compiled")  # noqa: E731
        theirs = lambda pol=pol: vectorbt_basket(panel, pol, fm, env).value()  # noqa: E731 (value: the equity)
        w_ours, r = timed(ours)
        w_theirs, v = timed(theirs)
        print(f"{name}: {len(r.fills):,} fills; warm-up (compiles) ours {w_ours:.2f} s, vectorbt {w_theirs:.2f} s")
        t_ours, t_theirs, diffs = [], [], []
        for _ in range(args.rounds):  # alternate: the machine's noise falls on both
            s, r = timed(ours)
            t_ours.append(s)
            s, v = timed(theirs)
            t_theirs.append(s)
            diffs.append(float(np.max(np.abs(v.to_numpy() / r.equity.to_numpy() - 1))))
        orders = int(vectorbt_basket(panel, pol, fm, env).orders.count())
        assert max(diffs) < 1e-9, f"{name}: the equity curves differ by {max(diffs):.1e}: nothing to compare"
        bo, mo, bv, mv = min(t_ours), statistics.median(t_ours), min(t_theirs), statistics.median(t_theirs)
        print(f"  intraday compiled: best {bo:.3f} s, median {mo:.3f} s ({len(panel.index) * n / bo / 1e6:.1f} M "
              f"symbol-bars/s)")  # fmt: skip
        print(f"  vectorbt grouped from_orders: best {bv:.3f} s, median {mv:.3f} s")
        print(f"  ratio vectorbt / intraday: best {bv / bo:.2f}x, median {mv / mo:.2f}x (goal >= 1); equity max "
              f"relative difference {max(diffs):.1e}; orders: vectorbt {orders:,}, intraday {len(r.fills):,} "
              "(ours skips rebalances under 1e-9 of equity)")  # fmt: skip
    head = panel.index[: args.python_bars]
    from intraday.panel import make_panel

    small = make_panel({s: b.loc[head] for s, b in panel.bars.items()})
    pol = policies["oracle"]
    s, r = timed(lambda: bt.run(small, pol, engine="python"))
    print(
        f"Python engine (the reference loop): {len(small.index):,} bars in {s:.1f} s, "
        f"{len(small.index) / s:,.0f} bars/s ({len(r.fills):,} fills)"
    )


if __name__ == "__main__":
    main()
