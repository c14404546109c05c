"""The venue client's boundary: every reply parsed once into a typed report, garbled ones refused as BadResponse (and
read again by the one retry policy), against the paper venue through the real ccxt client on 127.0.0.1."""

import asyncio

import ccxt
import pytest

from intraday.binance import connect, serve
from intraday.client import (
    BalanceReport,
    OrderReport,
    RetryPolicy,
    TradeReport,
    VenueClient,
    parse_orders,
    parse_trades,
)
from intraday.data import synth_market
from intraday.orders import OrderStatus
from intraday.venue import Venue

GARBLED = [None, "{", [], {"id": 1}, {"id": 1, "info": {}}]


@pytest.mark.parametrize("raw", GARBLED)
def test_garbled_order_replies_are_bad_responses(raw):
    with pytest.raises(ccxt.BadResponse, match="garbled order"):
        OrderReport.parse(raw)


@pytest.mark.parametrize(
    "raw", [None, {"id": 1}, {"id": 1, "order": 2, "amount": -1, "price": 1}, {"id": 1, "order": 2, "amount": 1}]
)
def test_garbled_trades_are_bad_responses(raw):
    with pytest.raises(ccxt.BadResponse, match="garbled trade"):
        TradeReport.parse(raw)


def test_lists_and_balances_must_parse_whole():
    with pytest.raises(ccxt.BadResponse, match="garbled trade list"):
        parse_trades({"id": 1})
    with pytest.raises(ccxt.BadResponse, match="garbled order list"):
        parse_orders(None)
    for bad in ({}, {"total": {}}, {"total": {"USDT": None}}, "x"):
        with pytest.raises(ccxt.BadResponse, match="garbled balance"):
            BalanceReport.parse(bad)
    order = {"id": 4, "clientOrderId": None, "info": {"status": "CANCELED"}, "status": "canceled", "filled": None}
    assert OrderReport.parse(order).status == OrderStatus.CANCELED and OrderReport.parse(order).filled == 0.0


def test_client_against_the_venue_reads_again_what_does_not_parse():
    venue = Venue(synth_market(days=1, seed=2), start=100, admin=True, keys={"k": "s"},
                  balances={"USDT": 1000.0, "SYN": 0.0})  # fmt: skip
    url, stop = serve(venue)

    async def main():
        vc = VenueClient(connect(url, "k", "s", pro=True), "SYN/USDT", RetryPolicy(base_s=0.01))
        try:
            venue.fault("GET /api/v3/exchangeInfo", "malformed", 2)
            market = await vc.load_market()
            venue.fault("GET /api/v3/account", "malformed", 2)
            bal = await vc.balance()
            price = await vc.last_price()
            rep = await vc.create("t-1", "buy", "limit", vc.amount(1.0), vc.price(price * 0.9))
            opens = await vc.open_orders()
            gone = await vc.cancel(rep.exchange_id, "t-1")
            absent = await vc.cancel(None, "t-none")
            with pytest.raises(ccxt.BadSymbol):
                await VenueClient(vc.ex, "NOPE/USDT", vc.retry).load_market()
            return market, bal, price, rep, opens, gone, absent, vc.retry.retries, vc.streams
        finally:
            await vc.ex.close()

    market, bal, price, rep, opens, gone, absent, retries, streams = asyncio.run(main())
    stop()
    assert market["symbol"] == "SYN/USDT" and bal.total("USDT") == 1000.0 and price > 0
    assert rep.status == OrderStatus.OPEN and [o.client_id for o in opens] == ["t-1"]
    assert gone.status == OrderStatus.CANCELED and absent is None
    assert retries["markets"] == 2 and retries["balance"] == 2  # garbled replies read again, then parsed
    assert streams  # ccxt.pro: a user data stream
