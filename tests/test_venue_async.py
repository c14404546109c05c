"The paper venue through the real async ccxt clients (ccxt.async_support.binance and ccxt.pro.binance) on 127.0.0.1."

import asyncio
import itertools
import time

import ccxt
import pytest

from intraday.binance import MarketSpec, connect, serve
from intraday.data import synth_market
from intraday.fills import FillModel
from intraday.orders import OrderStatus
from intraday.venue import Venue

START = 100
SYM = "SYN/USDT"


@pytest.fixture(scope="module")
def synbars():
    return synth_market(days=1, seed=1)


@pytest.fixture
def served(synbars):
    venue = Venue(
        synbars, start=START, keys={"key": "secret"}, admin=True, spec=MarketSpec(min_qty=0.01),
        balances={"USDT": 10_000.0, "SYN": 5.0},
    )  # fmt: skip
    url, stop = serve(venue)
    try:
        yield venue, url
    finally:
        stop()


@pytest.fixture(params=[False, True], ids=["async_support", "pro"])
def pro(request):
    "Every REST test runs with ccxt.async_support.binance and with ccxt.pro.binance (whose REST methods are its own)."
    return request.param


def run(url: str, body, key: str = "key", secret: str = "secret", pro: bool = False):
    "Run `await body(ex)` with a fresh async (or ccxt.pro) client, closing it afterwards."

    async def main():
        ex = connect(url, key, secret, pro=True) if pro else connect(url, key, secret, asynchronous=True)
        try:
            return await body(ex)
        finally:
            await ex.close()

    return asyncio.run(main())


def test_async_client_type(served):
    _, url = served
    ex = connect(url, "key", "secret", asynchronous=True)
    assert isinstance(ex, ccxt.async_support.binance)
    assert all(u.startswith(url) for u in ex.urls["api"].values())
    asyncio.run(ex.close())


def test_async_market_data(served, synbars, pro):
    venue, url = served

    async def body(ex):
        markets = await ex.load_markets()
        m = markets[SYM]
        assert list(markets) == [SYM]
        assert (m["id"], m["base"], m["quote"], m["spot"], m["active"]) == ("SYNUSDT", "SYN", "USDT", True, True)
        assert (m["precision"]["price"], m["precision"]["amount"]) == (0.01, 0.001)
        assert m["limits"]["amount"] == {"min": 0.01, "max": 100_000.0}
        assert m["limits"]["cost"]["min"] == 5.0
        assert abs(await ex.fetch_time() - time.time() * 1000) < 5000
        rows = await ex.fetch_ohlcv(SYM, "1m", limit=1000)
        since = rows[10][0]
        page = await ex.fetch_ohlcv(SYM, "1m", since=since, limit=3)
        last5 = await ex.fetch_ohlcv(SYM, "1m", limit=5)
        ticker, book = await asyncio.gather(ex.fetch_ticker(SYM), ex.fetch_order_book(SYM, limit=3))
        return rows, page, last5, ticker, book

    rows, page, last5, t, ob = run(url, body, pro=pro)
    want = synbars.iloc[: START + 1]
    assert len(rows) == START + 1
    assert [r[0] for r in rows] == [int(ts.timestamp() * 1000) for ts in want.index]
    for row, (_, bar) in zip(rows, want.iterrows()):
        assert row[1:] == pytest.approx([bar.open, bar.high, bar.low, bar.close, bar.volume], abs=1e-8)
    assert page == rows[10:13] and last5 == rows[-5:]
    close = synbars.close.iloc[START]
    assert t["symbol"] == SYM and t["last"] == pytest.approx(close, abs=1e-8)
    assert t["open"] == pytest.approx(synbars.open.iloc[0], abs=1e-8)
    assert t["high"] == pytest.approx(synbars.high.iloc[: START + 1].max(), abs=1e-8)
    assert t["low"] == pytest.approx(synbars.low.iloc[: START + 1].min(), abs=1e-8)
    assert t["baseVolume"] == pytest.approx(synbars.volume.iloc[: START + 1].sum(), rel=1e-9)
    assert t["bid"] < close < t["ask"]
    assert t["timestamp"] == venue.now - 1
    assert len(ob["bids"]) == len(ob["asks"]) == 3
    assert (ob["bids"][0][0], ob["asks"][0][0]) == (t["bid"], t["ask"])
    assert ob["bids"][1][0] == pytest.approx(ob["bids"][0][0] - 0.01)
    assert ob["asks"][2][0] == pytest.approx(ob["asks"][0][0] + 0.02)


def test_async_market_order_lifecycle(served, synbars, pro):
    venue, url = served

    async def place(ex):
        b0 = await ex.fetch_balance()
        o = await ex.create_order(SYM, "market", "buy", 2.0, params={"clientOrderId": "amkt-1"})
        return b0, o, await ex.fetch_balance()

    b0, o, b1 = run(url, place, pro=pro)
    assert (b0["USDT"]["free"], b0["SYN"]["total"]) == (10_000.0, 5.0)
    assert (o["status"], o["filled"], o["clientOrderId"], o["type"], o["side"], o["amount"]) == (
        "open", 0.0, "amkt-1", "market", "buy", 2.0,
    )  # fmt: skip
    assert b1["USDT"]["used"] > 2 * synbars.close.iloc[START] and b1["USDT"]["total"] == pytest.approx(10_000.0)

    venue.step()
    f = FillModel().fill(2.0, synbars.iloc[START + 1])

    async def check(ex):
        by_id = await ex.fetch_order(o["id"], SYM)
        by_cid = await ex.fetch_order(None, SYM, params={"origClientOrderId": "amkt-1"})
        return by_id, by_cid, await ex.fetch_my_trades(SYM), await ex.fetch_balance(), await ex.fetch_orders(SYM)

    by_id, by_cid, trades, b2, orders = run(url, check, pro=pro)
    assert by_id["id"] == by_cid["id"] == o["id"]
    assert (by_id["status"], by_id["filled"], by_id["remaining"]) == ("closed", 2.0, 0.0)
    assert by_id["average"] == pytest.approx(f.price, abs=1e-7)
    assert by_id["cost"] == pytest.approx(2.0 * f.price, abs=1e-6)
    (tr,) = trades
    assert (tr["order"], tr["side"], tr["amount"], tr["takerOrMaker"]) == (o["id"], "buy", 2.0, "taker")
    assert tr["symbol"] == SYM
    assert tr["price"] == pytest.approx(f.price, abs=1e-7)
    assert tr["fee"]["cost"] == pytest.approx(f.fee, abs=1e-7) and tr["fee"]["currency"] == "USDT"
    assert tr["timestamp"] == int(synbars.index[START + 1].timestamp() * 1000)
    assert b2["SYN"]["total"] == pytest.approx(7.0) and b2["USDT"]["used"] == 0.0
    assert b2["USDT"]["free"] == pytest.approx(10_000.0 - 2.0 * f.price - f.fee, abs=1e-6)
    assert [x["id"] for x in orders] == [o["id"]]
    assert venue.ledger()["balances"]["SYN"]["total"] == pytest.approx(7.0)


def test_async_limit_orders_open_cancel_fill(served, synbars, pro):
    venue, url = served
    lo_px = round(synbars.close.iloc[START] * 0.8, 2)
    hi_px = round(synbars.high.iloc[START + 1 : START + 60].max() - 0.01, 2)

    async def place(ex):
        o1 = await ex.create_order(SYM, "limit", "buy", 1.0, lo_px)
        o2 = await ex.create_order(SYM, "limit", "sell", 1.5, hi_px, params={"clientOrderId": "aask-1"})
        opened = await ex.fetch_open_orders(SYM)
        c = await ex.cancel_order(o1["id"], SYM)
        return o1, o2, opened, c, await ex.fetch_open_orders(SYM), await ex.fetch_balance()

    o1, o2, opened, c, still, bal = run(url, place, pro=pro)
    assert (o1["status"], o1["price"], o1["amount"], o1["type"]) == ("open", lo_px, 1.0, "limit")
    assert o2["clientOrderId"] == "aask-1"
    assert {o["id"] for o in opened} == {o1["id"], o2["id"]}
    assert (c["id"], c["status"]) == (o1["id"], "canceled")
    assert [o["id"] for o in still] == [o2["id"]]
    assert bal["USDT"]["used"] == 0.0 and bal["SYN"]["used"] == pytest.approx(1.5)

    while venue.orders[1]["status"] == OrderStatus.OPEN:
        venue.step()

    async def check(ex):
        return (await ex.fetch_order(None, SYM, params={"origClientOrderId": "aask-1"}), await ex.fetch_my_trades(SYM),
                await ex.fetch_orders(SYM), await ex.fetch_open_orders(SYM))  # fmt: skip

    o2, trades, orders, opened = run(url, check, pro=pro)
    assert (o2["status"], o2["filled"]) == ("closed", 1.5)
    assert o2["average"] == pytest.approx(max(hi_px, synbars.open.iloc[venue.cursor]), abs=1e-7)
    (tr,) = trades
    assert (tr["side"], tr["takerOrMaker"], tr["amount"]) == ("sell", "maker", 1.5)
    assert [o["status"] for o in orders] == ["canceled", "closed"] and opened == []


def test_async_errors(served, pro):
    venue, url = served

    async def body(ex):
        await ex.load_markets()
        for call, exc in [
            (ex.create_order(SYM, "market", "buy", 500.0), ccxt.InsufficientFunds),
            (ex.fetch_order(None, SYM, params={"origClientOrderId": "nope"}), ccxt.OrderNotFound),
            (ex.cancel_order("999", SYM), ccxt.OrderNotFound),
            (ex.create_order(SYM, "market", "buy", 0.005), ccxt.InvalidOrder),
        ]:
            with pytest.raises(exc):
                await call

    run(url, body, pro=pro)

    async def wrong(ex):
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await ex.fetch_balance()

    run(url, wrong, secret="wrong-secret", pro=pro)
    assert venue.orders == []


def test_async_limit_order_fills_partially_under_the_participation_cap(synbars):
    venue = Venue(synbars, start=START, keys={"k": "s"}, balances={"USDT": 1e8}, spec=MarketSpec(max_qty=1e7))
    url, stop = serve(venue)
    qty = 2000.0
    px = round(synbars.close.iloc[START] * 1.2, 2)  # marketable: the cap alone limits each bar's fill

    async def body(ex):
        o = await ex.create_order(SYM, "limit", "buy", qty, px)
        seen = []
        for _ in range(20):
            venue.step()
            seen.append(await ex.fetch_order(o["id"], SYM))
            if seen[-1]["status"] == "closed":
                break
        return seen, await ex.fetch_my_trades(SYM, limit=1000)

    try:
        seen, trades = run(url, body, "k", "s")
    finally:
        stop()
    assert seen[0]["status"] == "open" and 0 < seen[0]["filled"] < qty  # partially filled, still working
    assert seen[-1]["status"] == "closed" and seen[-1]["filled"] == pytest.approx(qty)
    assert len(trades) == len(seen) >= 2 and sum(t["amount"] for t in trades) == pytest.approx(qty)
    for t, bar in zip(trades, synbars.iloc[START + 1 :].itertuples()):
        assert t["amount"] <= 0.25 * bar.volume + 1e-9 and t["takerOrMaker"] == "maker"
        assert t["price"] == pytest.approx(min(px, bar.open), abs=1e-8)
    assert [o["filled"] for o in seen] == pytest.approx(list(itertools.accumulate(t["amount"] for t in trades)))
