"""Benchmark: the paper venue on loopback, driven by the real async ccxt client.

Run: .venv/bin/python tests/bench/bench_venue.py
Prints requests per second of concurrent fetch_ticker calls, p50/p99 round trip of create_order through
ccxt against a raw aiohttp POST of the same signed request (ratio), and the delay from a clock step to the bar in
ccxt.pro's watch_ohlcv against one fetch_ohlcv round trip (what a poller pays per poll, before its poll interval)."""

import asyncio
import hashlib
import hmac
import time
import urllib.parse

import aiohttp
import numpy as np

from intraday.binance import connect, serve
from intraday.data import synth_market
from intraday.venue import Venue

KEY, SECRET = "bench-key", "bench-secret"


async def throughput(url: str, n: int = 2000, concurrency: int = 32) -> float:
    ex = connect(url, KEY, SECRET, asynchronous=True)
    await ex.load_markets()
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            await ex.fetch_ticker("SYN/USDT")

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    rate = n / (time.perf_counter() - t0)
    await ex.close()
    return rate


async def order_latency(url: str, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    ex = connect(url, KEY, SECRET, asynchronous=True)
    await ex.load_markets()
    via_ccxt = []
    for i in range(n):
        t0 = time.perf_counter()
        await ex.create_order("SYN/USDT", "limit", "buy", 1.0, 50.0, {"newClientOrderId": f"c{i}"})
        via_ccxt.append(time.perf_counter() - t0)
    await ex.close()
    raw = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            q = {"symbol": "SYNUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
                 "price": "50", "newClientOrderId": f"r{i}", "timestamp": str(int(time.time() * 1000)),
                 "recvWindow": "5000"}  # fmt: skip
            body = urllib.parse.urlencode(q)
            sig = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
            t0 = time.perf_counter()
            async with session.post(f"{url}/api/v3/order", data=f"{body}&signature={sig}",
                                    headers={"X-MBX-APIKEY": KEY,
                                             "Content-Type": "application/x-www-form-urlencoded"}) as r:  # fmt: skip
                assert r.status == 200, await r.text()
                await r.read()
            raw.append(time.perf_counter() - t0)
    return np.array(via_ccxt[10:]) * 1e3, np.array(raw[10:]) * 1e3  # the first calls open connections


async def push_vs_poll(url: str, venue: Venue, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    ex = connect(url, KEY, SECRET, pro=True)
    await ex.load_markets()
    push, poll = [], []
    first = asyncio.ensure_future(ex.watch_ohlcv("SYN/USDT", "1m"))
    while not first.done():  # the first watch connects and subscribes: step until a bar reaches it
        venue.step()
        await asyncio.sleep(0.01)
    for _ in range(n):
        fut = asyncio.ensure_future(ex.watch_ohlcv("SYN/USDT", "1m"))
        await asyncio.sleep(0.002)  # let the watch reach its wait
        t0 = time.perf_counter()
        venue.step()
        await fut
        push.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await ex.fetch_ohlcv("SYN/USDT", "1m", limit=1)
        poll.append(time.perf_counter() - t0)
    await ex.close()
    return np.array(push[10:]) * 1e3, np.array(poll[10:]) * 1e3


def main() -> None:
    venue = Venue(synth_market(days=1, seed=1), keys={KEY: SECRET}, balances={"USDT": 1e9})
    url, stop = serve(venue)
    try:
        rps = asyncio.run(throughput(url))
        ccxt_ms, raw_ms = asyncio.run(order_latency(url))
        push_ms, poll_ms = asyncio.run(push_vs_poll(url, venue))
    finally:
        stop()
    print(f"venue on loopback, async ccxt client: {rps:,.0f} fetch_ticker requests/s (32 in flight)")
    print("create_order round trip (ms)       p50      p99")
    print(f"  through ccxt.async_support    {np.percentile(ccxt_ms, 50):7.2f}  {np.percentile(ccxt_ms, 99):7.2f}")
    print(f"  raw aiohttp POST              {np.percentile(raw_ms, 50):7.2f}  {np.percentile(raw_ms, 99):7.2f}")
    print(f"  ratio ccxt / raw              {np.percentile(ccxt_ms, 50) / np.percentile(raw_ms, 50):7.2f}  "
          f"{np.percentile(ccxt_ms, 99) / np.percentile(raw_ms, 99):7.2f}")  # fmt: skip
    print("new bar to client (ms)             p50      p99")
    print(f"  pushed, ccxt.pro watch_ohlcv  {np.percentile(push_ms, 50):7.2f}  {np.percentile(push_ms, 99):7.2f}")
    print(f"  one fetch_ohlcv poll          {np.percentile(poll_ms, 50):7.2f}  {np.percentile(poll_ms, 99):7.2f}")
    print(f"  ratio push / poll             {np.percentile(push_ms, 50) / np.percentile(poll_ms, 50):7.2f}  "
          f"{np.percentile(push_ms, 99) / np.percentile(poll_ms, 99):7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
