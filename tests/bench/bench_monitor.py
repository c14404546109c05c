"""Benchmark: what the monitor costs the decision loop.

Run: .venv/bin/python tests/bench/bench_monitor.py
Prints the cost per call of `Monitor.observe` (histogram + rolling window of 1000 + alarm judged on every call)
against a bare prometheus_client `Histogram.observe` (its peer: what any metric costs), in alternating rounds,
best and median; and the time of one /metrics scrape over loopback from the control server."""

import asyncio
import statistics
import time

import aiohttp
import numpy as np

from intraday.control import ControlServer
from intraday.monitor import Monitor
from intraday.obs import latency_histogram, make_registry

N, ROUNDS = 20_000, 7


def per_call(fn, xs) -> float:
    t0 = time.perf_counter()
    for x in xs:
        fn(x)
    return (time.perf_counter() - t0) / len(xs)


def observe_cost() -> tuple[list[float], list[float]]:
    xs = np.random.default_rng(0).lognormal(-8, 0.7, N).tolist()
    mon = Monitor(thresholds={"decision": 1e-3}, window=1000, min_count=50)
    bare = latency_histogram("bench_seconds", "peer", make_registry())
    monitor, peer = [], []
    for _ in range(ROUNDS):  # alternate, so drift on a shared machine hits both
        monitor.append(per_call(lambda x: mon.observe("decision", x), xs))
        peer.append(per_call(bare.observe, xs))
    return monitor, peer


async def scrape_cost(n: int = 200) -> list[float]:
    mon = Monitor()
    for x in np.random.default_rng(1).lognormal(-8, 0.7, 10_000):
        mon.observe("decision", float(x))
        mon.observe("bar_to_ack", float(x) * 20)
    times = []
    async with ControlServer(mon) as srv, aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.get(srv.url + "/metrics") as r:
                await r.read()
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    monitor, peer = observe_cost()
    bm, bp = min(monitor), min(peer)
    mm, mp = statistics.median(monitor), statistics.median(peer)
    print(f"Monitor.observe      best {bm * 1e6:6.2f} us  median {mm * 1e6:6.2f} us  per call ({N} calls x {ROUNDS})")
    print(f"Histogram.observe    best {bp * 1e6:6.2f} us  median {mp * 1e6:6.2f} us  (peer)")
    print(f"ratio monitor/peer   best {bm / bp:5.2f}x  median {mm / mp:5.2f}x")
    t = np.array(asyncio.run(scrape_cost()))
    print(
        f"/metrics scrape on loopback: p50 {np.quantile(t, 0.5) * 1e3:.2f} ms  p99 {np.quantile(t, 0.99) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
