"""Benchmark: what the risk engine adds per bar event and per order check, against the landed pre-trade checks.

Run: .venv/bin/python tests/bench/bench_risk.py
Per bar: `RiskEngine.bar` (14 metrics, a 500-bar window with historical VaR from a sorted window, the stress
scenarios, 6 rules; the gauges are read at scrape time) on 100,000 synthetic one-minute bars. Per order:
`Risk.check` (the pre-trade checks, its peer) and `RiskEngine.target` with a stress `block` rule (the position the
order leads to priced under every scenario). Each is timed call by call (perf_counter_ns) in alternating rounds;
p50 / p99 are reported with the goals of issue 24 (bar <= 20 us p99, order check <= 50 us p99)."""

import math
import time

import numpy as np

from intraday.config import RiskSettings
from intraday.data import synth_market
from intraday.obs import make_registry
from intraday.risk import Intent, Risk
from intraday.rules import RiskEngine, parse_rules

RULES = parse_rules({"rules": [
    {"name": "dd", "metric": "drawdown", "op": ">=", "threshold": 0.5, "action": "halt"},
    {"name": "vel", "metric": "drawdown_velocity", "op": ">", "threshold": 0.01, "action": "block", "window": 3},
    {"name": "vol", "metric": "realized_vol", "op": ">", "threshold": 0.01, "action": "vol_target"},
    {"name": "var", "metric": "var_historical", "op": ">", "threshold": 1e6, "action": "reduce", "weight": 0.5},
    {"name": "slip", "metric": "slippage_bps", "op": ">", "threshold": 50, "action": "warn"},
    {"name": "worst", "metric": "stress_loss", "op": ">", "threshold": 0.5, "action": "block"},
]})  # fmt: skip
COSTS = {"half_spread_bps": 1.0, "taker_bps": 2.0, "kyle_lambda": 5e-7}
N, ROUNDS = 50_000, 3


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs) / 1e3, q))


def bar_times(closes, vols) -> list[int]:
    eng = RiskEngine(RULES, window=500, costs=COSTS)
    eng.export(make_registry())
    out, pos, eq0 = [], 40.0, 10_000.0
    clock = time.perf_counter_ns
    for i in range(len(closes)):
        c = closes[i]
        eq = eq0 + pos * (c - closes[0])
        t0 = clock()
        eng.bar(60.0 * i, c, vols[i], eq, pos, 0.1)
        out.append(clock() - t0)
    return out


def order_times(closes) -> tuple[list[int], list[int]]:
    eng = RiskEngine(RULES, window=500, costs=COSTS)
    for i, c in enumerate(closes[:600]):
        eng.bar(60.0 * i, c, 100.0, 10_000.0, 40.0, 0.1)
    risk = Risk(RiskSettings(max_position_qty=1000, max_order_notional=1e6))
    checks, targets, clock, now = [], [], time.perf_counter_ns, time.time()
    for i, c in enumerate(closes[:N]):
        intent = Intent("buy" if i % 2 else "sell", 1.0 + (i % 7))
        t0 = clock()
        risk.check(intent, 40.0, 0.0, 1, c, now)
        t1 = clock()
        eng.target(0.9 if i % 2 else -0.9, 0.4, c)
        t2 = clock()
        checks.append(t1 - t0)
        targets.append(t2 - t1)
    return checks, targets


def main() -> None:
    bars = synth_market(days=365, seed=3)
    closes, vols = bars.close.to_numpy().tolist(), bars.volume.to_numpy().tolist()
    bar_p99, chk_p99, tgt_p99 = [], [], []
    for r in range(ROUNDS):
        b = bar_times(closes[: N * 2], vols[: N * 2])
        c, t = order_times(closes)
        bar_p99.append(pct(b, 99))
        chk_p99.append(pct(c, 99))
        tgt_p99.append(pct(t, 99))
        print(f"round {r}: bar p50 {pct(b, 50):.1f} us p99 {pct(b, 99):.1f} us | Risk.check p50 {pct(c, 50):.1f} "
              f"p99 {pct(c, 99):.1f} us | engine order check p50 {pct(t, 50):.1f} p99 {pct(t, 99):.1f} us")  # fmt: skip
    bar, chk, tgt = min(bar_p99), min(chk_p99), min(tgt_p99)
    print(f"best of {ROUNDS} rounds: bar event p99 {bar:.1f} us (goal <= 20: {'met' if bar <= 20 else 'MISSED'}); "
          f"order check p99 {tgt:.1f} us, {tgt / chk:.1f}x the pre-trade checks' {chk:.1f} us "
          f"(goal <= 50: {'met' if tgt <= 50 else 'MISSED'})")  # fmt: skip
    assert math.isfinite(bar)


if __name__ == "__main__":
    main()
