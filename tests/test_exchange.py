"""The paper venue for several symbols on one account (issue 23, item 6: the venue), through the real ccxt clients on
127.0.0.1: one balance sheet for every symbol, orders and fills per symbol, every symbol's klines from one clock over
one websocket client, the user data stream naming the symbol, faults and the real-time clock for all."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import ccxt
import pytest

from intraday.binance import Wire, connect, serve
from intraday.exchange import Exchange
from intraday.panel import Basket, write_panel

START = 200
PANEL = Basket("rotation", alpha=0.1).generate(days=1, seed=3)
SYMS = PANEL.symbols  # AAA/USDT, BBB/USDT, CCC/USDT


@pytest.fixture
def served():
    ex = Exchange(PANEL, start=START, keys={"key": "secret"}, admin=True)
    url, stop = serve(ex)
    try:
        yield ex, url
    finally:
        stop()


def test_one_account_for_every_symbol(served):
    ex, url = served
    c = connect(url, "key", "secret", options={"warnOnFetchOpenOrdersWithoutSymbol": False})
    assert sorted(c.load_markets()) == SYMS
    c.create_order("AAA/USDT", "market", "buy", 40.0)
    limit = c.create_order("CCC/USDT", "limit", "buy", 10.0, 50.0)  # far below the market: rests
    assert {o["symbol"] for o in c.fetch_open_orders()} == {"AAA/USDT", "CCC/USDT"}
    assert [o["symbol"] for o in c.fetch_open_orders("CCC/USDT")] == ["CCC/USDT"]
    locked = c.fetch_balance()["USDT"]["used"]
    assert locked > 40 * PANEL.bars["AAA/USDT"]["close"].iloc[START] + 10 * 50.0 * 0.999  # both orders lock the USDT
    ex.step()
    free = c.fetch_balance()["USDT"]["free"]
    with pytest.raises(ccxt.InsufficientFunds):  # what is left after the AAA fill and the CCC lock, not 10,000
        c.create_order(
            "BBB/USDT", "market", "buy", round(1.2 * free / PANEL.bars["BBB/USDT"]["close"].iloc[START + 1], 3)
        )
    c.cancel_order(limit["id"], "CCC/USDT")
    assert c.fetch_balance()["USDT"]["used"] == 0.0
    (fill,) = c.fetch_my_trades("AAA/USDT")
    assert c.fetch_my_trades("BBB/USDT") == [] and c.fetch_my_trades("CCC/USDT") == []
    total = c.fetch_balance()["total"]
    assert total["AAA"] == 40.0 and total["USDT"] == pytest.approx(
        10_000 - fill["cost"] - fill["fee"]["cost"], abs=1e-6
    )
    with pytest.raises(ccxt.BadSymbol):
        c.fetch_ohlcv("XYZ/USDT", "1m")
    ledger = ex.ledger()
    assert [o["symbol"] for o in ledger["orders"]] == ["AAAUSDT", "CCCUSDT"] and len(ledger["trades"]) == 1


def test_every_symbols_bars_from_one_clock_over_one_websocket_client(served):
    ex, url = served

    async def main():
        c = connect(url, "key", "secret", pro=True)
        try:
            await c.load_markets()
            pairs = [[s, "1m"] for s in SYMS]
            first = asyncio.ensure_future(c.watch_ohlcv_for_symbols(pairs))
            (w,) = [x for x in ex.listeners if isinstance(x, Wire)]
            for _ in range(500):
                if w.subscribed() >= 3:
                    break
                await asyncio.sleep(0.01)
            async with aiohttp.ClientSession() as s, s.post(url + "/admin/step") as r:
                assert r.status == 200
            await asyncio.wait_for(first, 5)  # the first symbol's kline; the others arrive on the same socket
            for _ in range(500):
                if all(c.ohlcvs.get(s, {}).get("1m") for s in SYMS):
                    break
                await asyncio.sleep(0.01)
            got = {s: list(c.ohlcvs[s]["1m"]) for s in SYMS if c.ohlcvs.get(s, {}).get("1m")}
            return got
        finally:
            await c.close()

    got = asyncio.run(main())
    assert set(got) == set(SYMS)
    for s in SYMS:
        (bar,) = got[s][-1:]
        assert bar[4] == pytest.approx(PANEL.bars[s]["close"].iloc[START + 1], abs=1e-8)


def test_the_user_stream_names_the_symbol_of_each_fill(served):
    ex, url = served

    async def main():
        c = connect(url, "key", "secret", pro=True)
        try:
            await c.load_markets()
            watch = asyncio.ensure_future(c.watch_my_trades())
            await asyncio.sleep(0.3)
            await c.create_order("BBB/USDT", "market", "buy", 5.0)
            ex.step()
            return await asyncio.wait_for(watch, 5)
        finally:
            await c.close()

    trades = asyncio.run(main())
    assert [t["symbol"] for t in trades] == ["BBB/USDT"] and trades[0]["amount"] == 5.0


def test_faults_and_the_real_time_clock_act_on_every_symbol():
    ex = Exchange(PANEL, start=START, keys={"key": "secret"}, speed=60.0)
    shift = ex.clock.rebase()
    assert shift != 0 and len({int(m.ts[0]) for m in ex.markets.values()}) == 1  # every market re-based together
    url, stop = serve(ex)
    try:
        ex.fault("POST /api/v3/order", "reject")
        c = connect(url, "key", "secret")
        c.load_markets()
        with pytest.raises(ccxt.InvalidOrder):
            c.create_order("CCC/USDT", "market", "buy", 1.0)
        assert c.create_order("AAA/USDT", "market", "buy", 1.0)["status"] == "open"  # one fault, one request
        assert ex.fault_state()["log"][0]["kind"] == "reject"
    finally:
        stop()


def test_venue_serve_takes_a_basket_file(tmp_path):
    path = write_panel(PANEL, tmp_path / "basket.parquet")
    env = os.environ | {"INTRADAY_API_KEY": "keykeykey1", "INTRADAY_API_SECRET": "secretsecret1"}
    cli = str(Path(sys.executable).parent / "intraday")
    cmd = [cli, "venue", "serve", "--data", str(path), "--port", "0", "--step"]
    r = subprocess.run([*cmd, "--symbol", "AAA/USDT"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "is a basket file; the venue serves its symbols" in r.stderr
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("paper venue for AAA/USDT, BBB/USDT, CCC/USDT (1,440 bars"), line
        url = line.split(" on ")[1].strip()
        c = connect(url, "keykeykey1", "secretsecret1")
        assert sorted(c.load_markets()) == SYMS
    finally:
        p.terminate()
        p.wait(10)
