"""The user data stream through the real ccxt.pro.binance client on 127.0.0.1: watch_orders, watch_my_trades and
watch_balance over the WebSocket API (userDataStream.subscribe.signature), the listenKey endpoints and their stream,
and the stream's duplicate_trade fault."""

import asyncio
import json

import aiohttp
import ccxt
import pytest

from intraday.binance import Wire, connect, serve
from intraday.data import synth_market
from intraday.venue import Venue

SYM = "SYN/USDT"
BARS = synth_market(days=1, seed=1)


@pytest.fixture
def served():
    venue = Venue(BARS, start=100, keys={"key": "secret"}, admin=True, balances={"USDT": 10_000.0, "SYN": 5.0})
    url, stop = serve(venue)
    try:
        yield venue, url
    finally:
        stop()


def wire(venue: Venue) -> Wire:
    (w,) = [w for w in venue.listeners if isinstance(w, Wire)]
    return w


async def until(cond, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not reached")


async def pushed(watch, act, timeout: float = 5.0):
    "Start `watch()`, let it reach its wait, `act()`, and return what the watch got."
    fut = asyncio.ensure_future(watch())
    await asyncio.sleep(0.05)  # a watch only gets what arrives while it waits
    await act()
    return await asyncio.wait_for(fut, timeout)


def see(orders: list[dict]) -> list[tuple]:
    "What the orders say now (ccxt updates its cached order dicts in place)."
    return [(o["clientOrderId"], o["status"], o["filled"]) for o in orders]


def test_watch_orders_and_my_trades_follow_every_change(served):
    venue, url = served
    hi = round(BARS.high.iloc[101:160].max() - 0.01, 2)

    async def main():
        ex = connect(url, "key", "secret", pro=True)
        try:
            await ex.load_markets()
            first = asyncio.ensure_future(ex.watch_orders(SYM))
            await until(lambda: wire(venue).subscribed() >= 1)
            buy = await ex.create_order(SYM, "market", "buy", 2.0, params={"clientOrderId": "u-buy"})
            seen = see(await asyncio.wait_for(first, 5))
            trades = asyncio.ensure_future(ex.watch_my_trades(SYM))

            async def step():
                venue.step()  # the market buy fills

            seen += see(await pushed(lambda: ex.watch_orders(SYM), step))
            trades = await asyncio.wait_for(trades, 5)
            box = {}

            async def place():
                box["rest"] = await ex.create_order(SYM, "limit", "sell", 1.0, hi, params={"clientOrderId": "u-rest"})

            seen += see(await pushed(lambda: ex.watch_orders(SYM), place))

            async def cancel():
                await ex.cancel_order(box["rest"]["id"], SYM)

            seen += see(await pushed(lambda: ex.watch_orders(SYM), cancel))
            return buy, seen, trades, await ex.fetch_my_trades(SYM)
        finally:
            await ex.close()

    buy, seen, trades, rest_trades = asyncio.run(main())
    assert seen == [("u-buy", "open", 0.0), ("u-buy", "closed", 2.0), ("u-rest", "open", 0.0),
                    ("u-rest", "canceled", 0.0)]  # fmt: skip
    (t,) = trades
    (rt,) = rest_trades
    assert (t["id"], t["order"], t["side"], t["amount"], t["takerOrMaker"]) == (
        rt["id"],
        buy["id"],
        "buy",
        2.0,
        "taker",
    )
    assert t["price"] == pytest.approx(rt["price"]) and t["fee"]["cost"] == pytest.approx(rt["fee"]["cost"])
    assert venue.ledger()["balances"]["SYN"] == {"free": 7.0, "locked": 0.0, "total": 7.0}


def test_watch_balance_matches_the_ledger(served):
    venue, url = served

    async def main():
        ex = connect(url, "key", "secret", pro=True)
        try:
            await ex.load_markets()
            first = asyncio.ensure_future(ex.watch_balance())
            await until(lambda: wire(venue).subscribed() >= 1)
            await asyncio.sleep(0.05)
            await ex.create_order(SYM, "limit", "buy", 1.0, 50.0)
            await asyncio.wait_for(first, 5)
            return await ex.fetch_balance(), ex.balance["spot"]
        finally:
            await ex.close()

    rest, streamed = asyncio.run(main())
    for asset in ("SYN", "USDT"):
        assert streamed[asset]["free"] == pytest.approx(rest[asset]["free"])
        assert streamed[asset]["used"] == pytest.approx(rest[asset]["used"])
    assert streamed["USDT"]["used"] == pytest.approx(venue.balances["USDT"][1]) and streamed["USDT"]["used"] >= 50.0


def test_subscribe_with_a_bad_signature_is_refused(served):
    venue, url = served

    async def main():
        ex = connect(url, "key", "wrong-secret", pro=True)
        ws = url.replace("http://", "ws://")
        async with aiohttp.ClientSession() as s, s.ws_connect(ws + "/ws-api/v3") as sock:
            p = ex.sign_params({})
            await sock.send_str(json.dumps({"id": "7", "method": "userDataStream.subscribe.signature", "params": p}))
            answer = json.loads((await sock.receive(5)).data)
        try:
            await ex.load_markets()
            # ccxt 4.5.90 raises the AuthenticationError from handle_ws_error, but its own cleanup in
            # ensure_user_data_stream_ws_subscribe_signature then deletes the subscription twice: KeyError('spot')
            with pytest.raises((ccxt.AuthenticationError, KeyError)):
                await asyncio.wait_for(ex.watch_orders(SYM), 5)
        finally:
            await ex.close()
        return answer

    answer = asyncio.run(main())
    assert answer == {
        "id": "7",
        "status": 400,
        "error": {"code": -1022, "msg": "Signature for this request is not valid."},
    }
    assert wire(venue).conns == {}


def test_duplicate_trade_on_the_user_stream(served):
    venue, url = served
    venue.fault("/ws-api/v3", "duplicate_trade")

    async def main():
        ex = connect(url, "key", "secret", pro=True, options={"watchOrders": {}})
        ws = url.replace("http://", "ws://")
        async with aiohttp.ClientSession() as s, s.ws_connect(ws + "/ws-api/v3") as sock:
            p = ex.sign_params({})
            await sock.send_str(json.dumps({"id": "1", "method": "userDataStream.subscribe.signature", "params": p}))
            ack = json.loads((await sock.receive(5)).data)
            await ex.load_markets()
            await ex.create_order(SYM, "market", "buy", 1.0)
            venue.step()
            events = []
            while len([e for e in events if e["event"].get("x") == "TRADE"]) < 2:
                events.append(json.loads((await sock.receive(5)).data))
        await ex.close()
        return ack, events

    ack, events = asyncio.run(main())
    assert ack == {"id": "1", "status": 200, "result": {"subscriptionId": 0}}
    trades = [e["event"] for e in events if e["event"].get("x") == "TRADE"]
    assert trades[0] == trades[1] and trades[0]["t"] == 1  # the same trade id twice
    assert {e["subscriptionId"] for e in events} == {0}
    assert {e["event"]["e"] for e in events} == {"executionReport", "outboundAccountPosition"}
    assert venue.fault_state()["counts"] == {"duplicate_trade": 1}


def test_listen_key_endpoints_and_stream(served):
    venue, url = served
    ex = connect(url, "key", "secret")
    key = ex.publicPostUserDataStream()["listenKey"]
    assert ex.publicPutUserDataStream({"listenKey": key}) == {}

    async def main():
        ws = url.replace("http://", "ws://")
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{ws}/ws/{key}") as sock:
                await until(lambda: wire(venue).subscribed() >= 1)
                venue.new_order("BUY", "LIMIT", 1.0, 50.0, "lk-1")
                got = [json.loads((await sock.receive(5)).data) for _ in range(2)]
            async with s.get(f"{url}/ws/not-a-key") as r:
                return got, r.status

    got, status = asyncio.run(main())
    assert [e["e"] for e in got] == ["executionReport", "outboundAccountPosition"]
    assert (got[0]["c"], got[0]["x"], got[0]["X"]) == ("lk-1", "NEW", "NEW")
    assert status == 400
    assert ex.publicDeleteUserDataStream({"listenKey": key}) == {}
    with pytest.raises(ccxt.ExchangeError, match="-1125"):
        ex.publicPutUserDataStream({"listenKey": key})
    with pytest.raises(ccxt.AuthenticationError):
        connect(url, "nobody", "x").publicPostUserDataStream()
