"The venue's websocket streams through the real ccxt.pro.binance client: watch_ohlcv and watch_trades on 127.0.0.1."

import asyncio
import json

import aiohttp
import ccxt
import ccxt.pro
import pytest

from intraday.binance import Wire, connect, serve
from intraday.data import synth_market
from intraday.orders import OrderStatus
from intraday.venue import Venue

START = 100
SYM = "SYN/USDT"
BARS = synth_market(days=1, seed=1)


@pytest.fixture
def served():
    venue = Venue(BARS, start=START, keys={"key": "secret"}, admin=True, balances={"USDT": 10_000.0, "SYN": 5.0})
    url, stop = serve(venue)
    try:
        yield venue, url
    finally:
        stop()


def wire(venue: Venue) -> Wire:
    "The wire side of the served venue (its websocket connections)."
    (w,) = [w for w in venue.listeners if isinstance(w, Wire)]
    return w


async def subscribed(venue: Venue, n: int) -> None:
    "Wait until the venue's websocket connections hold `n` subscriptions."
    for _ in range(500):
        if wire(venue).subscribed() >= n:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("no subscription reached the venue")


async def pushed(watch, advance, timeout: float = 5.0) -> list:
    "Start `watch()`, let it reach its wait, call `advance()` (moves the clock), and return what the watch got."
    fut = asyncio.ensure_future(watch())
    await asyncio.sleep(0.05)  # a watch only gets what arrives while it waits, as on Binance
    await advance()
    return await asyncio.wait_for(fut, timeout)


def test_connect_pro_points_every_url_at_the_venue(served):
    _, url = served
    ex = connect(url, "key", "secret", pro=True)
    assert isinstance(ex, ccxt.pro.binance)
    ws = url.replace("http://", "ws://")
    assert ex.urls["api"]["ws"]["spot"] == ws + "/ws"

    def strings(d):
        for v in d.values():
            yield from strings(v) if isinstance(v, dict) else [v]

    assert all(u.startswith((url, ws)) for u in strings(ex.urls["api"]) if isinstance(u, str))
    asyncio.run(ex.close())


def test_watch_ohlcv_gets_the_bars_of_admin_steps(served):
    venue, url = served

    async def main():
        ex = connect(url, "key", "secret", pro=True)
        try:
            await ex.load_markets()
            first = asyncio.ensure_future(ex.watch_ohlcv(SYM, "1m"))
            await subscribed(venue, 1)

            async def admin_step():
                async with aiohttp.ClientSession() as s, s.post(url + "/admin/step") as r:
                    assert r.status == 200

            await admin_step()
            got = await asyncio.wait_for(first, 5)
            for _ in range(2):
                got += await pushed(lambda: ex.watch_ohlcv(SYM, "1m"), admin_step)
            return got
        finally:
            await ex.close()

    got = asyncio.run(main())
    want = BARS.iloc[START + 1 : START + 4]
    assert [b[0] for b in got] == [int(t.timestamp() * 1000) for t in want.index]
    for b, (_, bar) in zip(got, want.iterrows()):
        assert b[1:] == pytest.approx([bar.open, bar.high, bar.low, bar.close, bar.volume], abs=1e-8)


def test_watch_trades_gets_the_fills_of_rest_orders(served):
    venue, url = served
    hi_px = round(BARS.high.iloc[START + 1 : START + 60].max() - 0.01, 2)

    async def main():
        ex = connect(url, "key", "secret", pro=True)
        try:
            await ex.load_markets()
            first = asyncio.ensure_future(ex.watch_trades(SYM))
            await subscribed(venue, 1)
            buy = await ex.create_order(SYM, "market", "buy", 2.0, params={"clientOrderId": "ws-buy"})
            sell = await ex.create_order(SYM, "limit", "sell", 1.5, hi_px, params={"clientOrderId": "ws-sell"})
            venue.step()  # from this thread: the venue queues the events on the server's loop
            trades = await asyncio.wait_for(first, 5)
            while venue.orders[1]["status"] == OrderStatus.OPEN and BARS.high.iloc[venue.cursor + 1] < hi_px:
                venue.step()

            async def fill_step():
                venue.step()

            trades += await pushed(lambda: ex.watch_trades(SYM), fill_step)
            return buy, sell, trades, await ex.fetch_my_trades(SYM)
        finally:
            await ex.close()

    buy, sell, trades, mine = asyncio.run(main())
    assert len(trades) == len(mine) == 2
    for t, m in zip(trades, mine):
        assert (t["id"], t["symbol"], t["timestamp"]) == (m["id"], SYM, m["timestamp"])
        assert (t["price"], t["amount"]) == pytest.approx((m["price"], m["amount"]), abs=1e-8)
    assert trades[0]["side"] == "buy"  # the market buy took liquidity
    assert trades[1]["side"] == "buy"  # the resting sell was hit: the aggressor bought, as Binance's tape says
    assert mine[0]["order"] == buy["id"] and mine[1]["order"] == sell["id"] and mine[1]["side"] == "sell"
    assert trades[0]["timestamp"] == int(BARS.index[START + 1].timestamp() * 1000)


def test_raw_streams_and_subscription_errors(served):
    venue, url = served
    ws_url = url.replace("http://", "ws://")

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(ws_url + "/ws/synusdt@kline_1m") as ws:
                await subscribed(venue, 1)
                venue.step()
                event = json.loads((await ws.receive(5)).data)
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["synusdt@kline_5m"], "id": 7}))
                refused = json.loads((await ws.receive(5)).data)
                await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
                listed = json.loads((await ws.receive(5)).data)
            async with s.get(ws_url.replace("ws://", "http://") + "/ws/btcusdt@trade") as r:
                status = r.status
        ex = connect(url, "key", "secret", pro=True)
        try:
            with pytest.raises(ccxt.ExchangeError, match="unknown stream"):
                await asyncio.wait_for(ex.watch_ohlcv(SYM, "5m"), 5)
        finally:
            await ex.close()
        return event, refused, listed, status

    event, refused, listed, status = asyncio.run(main())
    assert (event["e"], event["k"]["t"], event["k"]["x"]) == (
        "kline",
        int(BARS.index[START + 1].timestamp() * 1000),
        True,
    )
    assert refused["id"] == 7 and refused["error"]["code"] == 2
    assert listed == {"result": ["synusdt@kline_1m"], "id": 8}
    assert status == 400
    assert wire(venue).conns == {}  # closed connections are forgotten
