"The paper venue through the real ccxt.binance client on 127.0.0.1: every endpoint, error mapping and fault."

import json
import time
import urllib.error
import urllib.request

import ccxt
import pytest

from intraday.binance import MarketSpec, connect, local_urls, serve
from intraday.data import synth_market
from intraday.fills import FillModel
from intraday.venue import Venue

START = 100
SYM = "SYN/USDT"


@pytest.fixture(scope="module")
def synbars():
    return synth_market(days=1, seed=1)


@pytest.fixture
def venue(synbars):
    return Venue(
        synbars, start=START, keys={"key": "secret"}, admin=True, spec=MarketSpec(min_qty=0.01),
        balances={"USDT": 10_000.0, "SYN": 5.0},
    )  # fmt: skip


@pytest.fixture
def served(venue):
    url, stop = serve(venue)
    try:
        yield venue, url, connect(url, "key", "secret")
    finally:
        stop()


def admin(url: str, path: str, data: dict | None = None) -> dict:
    "POST (with a JSON body) or GET an admin endpoint."
    body = None if data is None else json.dumps(data).encode()
    method = "GET" if path.startswith("/admin/ledger") else "POST"
    with urllib.request.urlopen(urllib.request.Request(url + path, data=body, method=method), timeout=5) as r:
        return json.loads(r.read())


def test_public_endpoints(served, synbars):
    venue, url, ex = served
    markets = ex.load_markets()
    assert list(markets) == [SYM]
    m = markets[SYM]
    assert (m["id"], m["base"], m["quote"], m["spot"], m["active"]) == ("SYNUSDT", "SYN", "USDT", True, True)
    assert m["precision"] == {**m["precision"], "price": 0.01, "amount": 0.001}
    assert m["limits"]["amount"] == {"min": 0.01, "max": 100_000.0}
    assert m["limits"]["price"] == {"min": 0.01, "max": 1_000_000.0}
    assert m["limits"]["cost"]["min"] == 5.0
    assert abs(ex.fetch_time() - time.time() * 1000) < 5000
    assert ex.public_get_ping() == {}

    rows = ex.fetch_ohlcv(SYM, "1m", limit=1000)
    assert len(rows) == START + 1  # nothing after the current bar
    want = synbars.iloc[: START + 1]
    assert rows[0][0] == int(want.index[0].timestamp() * 1000)
    assert rows[-1][0] == int(want.index[-1].timestamp() * 1000)
    for row, (_, bar) in zip(rows, want.iterrows()):
        assert row[1:] == pytest.approx([bar.open, bar.high, bar.low, bar.close, bar.volume], abs=1e-8)
    since = rows[10][0]
    assert [r[0] for r in ex.fetch_ohlcv(SYM, "1m", since=since, limit=3)] == [r[0] for r in rows[10:13]]
    assert [r[0] for r in ex.fetch_ohlcv(SYM, "1m", limit=5)] == [r[0] for r in rows[-5:]]

    t = ex.fetch_ticker(SYM)
    close = synbars.close.iloc[START]
    assert t["last"] == pytest.approx(close, abs=1e-8)
    assert t["high"] == pytest.approx(synbars.high.iloc[: START + 1].max(), abs=1e-8)
    assert t["bid"] < close < t["ask"]

    ob = ex.fetch_order_book(SYM)
    bid, ask = ob["bids"][0][0], ob["asks"][0][0]
    assert bid < close < ask and ask - bid <= 2 * close * 1e-4 + 0.02
    assert len(ob["bids"]) == len(ob["asks"]) == 5
    assert ob["bids"][1][0] == pytest.approx(bid - 0.01) and ob["asks"][1][0] == pytest.approx(ask + 0.01)

    assert url.startswith("http://127.0.0.1:")
    assert all(u.startswith(url) for u in ex.urls["api"].values())  # nothing can leave the machine

    admin(url, "/admin/step?n=2")
    assert ex.fetch_ticker(SYM)["last"] == pytest.approx(synbars.close.iloc[START + 2], abs=1e-8)
    assert len(ex.fetch_ohlcv(SYM, "1m", limit=1000)) == START + 3


def test_market_order_fills_next_bar(served, synbars):
    venue, url, ex = served
    ex.load_markets()
    b0 = ex.fetch_balance()
    assert (b0["USDT"]["free"], b0["SYN"]["total"]) == (10_000.0, 5.0)
    o = ex.create_order(SYM, "market", "buy", 2.0, params={"clientOrderId": "mkt-1"})
    assert (o["status"], o["filled"], o["clientOrderId"], o["type"], o["side"]) == (
        "open",
        0.0,
        "mkt-1",
        "market",
        "buy",
    )
    b1 = ex.fetch_balance()
    assert b1["USDT"]["used"] > 2 * synbars.close.iloc[START]
    assert b1["USDT"]["total"] == pytest.approx(10_000.0)

    assert admin(url, "/admin/step")["cursor"] == START + 1
    f = FillModel().fill(2.0, synbars.iloc[START + 1])
    o = ex.fetch_order(o["id"], SYM)
    assert (o["status"], o["filled"], o["remaining"]) == ("closed", 2.0, 0.0)
    assert o["average"] == pytest.approx(f.price, abs=1e-7)
    assert o["cost"] == pytest.approx(2.0 * f.price, abs=1e-6)
    by_cid = ex.fetch_order(None, SYM, params={"origClientOrderId": "mkt-1"})
    assert by_cid["id"] == o["id"]

    (tr,) = ex.fetch_my_trades(SYM)
    assert (tr["order"], tr["side"], tr["amount"], tr["takerOrMaker"]) == (o["id"], "buy", 2.0, "taker")
    assert tr["price"] == pytest.approx(f.price, abs=1e-7)
    assert tr["fee"]["cost"] == pytest.approx(f.fee, abs=1e-7) and tr["fee"]["currency"] == "USDT"
    assert tr["timestamp"] == int(synbars.index[START + 1].timestamp() * 1000)

    b2 = ex.fetch_balance()
    assert b2["SYN"]["total"] == pytest.approx(7.0)
    assert b2["USDT"]["used"] == 0.0
    assert b2["USDT"]["free"] == pytest.approx(10_000.0 - 2.0 * f.price - f.fee, abs=1e-6)
    led = admin(url, "/admin/ledger")
    assert led == json.loads(json.dumps(venue.ledger()))
    assert led["balances"]["SYN"]["total"] == pytest.approx(7.0)


def test_limit_orders_rest_cancel_and_fill(served, synbars):
    venue, url, ex = served
    ex.load_markets()
    close = synbars.close.iloc[START]
    lo_px = round(close * 0.8, 2)  # far below: never fills in the test
    o1 = ex.create_order(SYM, "limit", "buy", 1.0, lo_px)
    hi_px = round(synbars.high.iloc[START + 1 : START + 60].max() - 0.01, 2)
    o2 = ex.create_order(SYM, "limit", "sell", 1.5, hi_px, params={"clientOrderId": "ask-1"})
    assert o1["status"] == o2["status"] == "open" and o1["price"] == lo_px
    bal = ex.fetch_balance()
    assert bal["USDT"]["used"] == pytest.approx(lo_px)  # maker fee 0
    assert bal["SYN"]["used"] == pytest.approx(1.5)
    assert {o["id"] for o in ex.fetch_open_orders(SYM)} == {o1["id"], o2["id"]}

    c = ex.cancel_order(o1["id"], SYM)
    assert c["status"] == "canceled"
    assert ex.fetch_balance()["USDT"]["used"] == 0.0
    assert [o["id"] for o in ex.fetch_open_orders(SYM)] == [o2["id"]]

    while ex.fetch_order(None, SYM, params={"origClientOrderId": "ask-1"})["status"] == "open":
        venue.step()
    i = venue.cursor
    assert synbars.high.iloc[i] >= hi_px and synbars.high.iloc[START + 1 : i].max() < hi_px
    o2 = ex.fetch_order(o2["id"], SYM)
    assert (o2["status"], o2["filled"]) == ("closed", 1.5)
    assert o2["average"] == pytest.approx(max(hi_px, synbars.open.iloc[i]), abs=1e-7)
    (tr,) = ex.fetch_my_trades(SYM)
    assert (tr["side"], tr["takerOrMaker"], tr["amount"]) == ("sell", "maker", 1.5)
    assert ex.fetch_balance()["SYN"]["total"] == pytest.approx(3.5)
    assert [o["status"] for o in ex.fetch_orders(SYM)] == ["canceled", "closed"]
    assert ex.fetch_open_orders(SYM) == []


def test_partial_fill_under_participation_cap(synbars):
    venue = Venue(synbars, start=START, keys={"k": "s"}, balances={"USDT": 1e8}, spec=MarketSpec(max_qty=1e7))
    url, stop = serve(venue)
    try:
        ex = connect(url, "k", "s")
        o = ex.create_order(SYM, "limit", "buy", 3000.0, round(synbars.close.iloc[START] * 1.2, 2))
        venue.step()
        o = ex.fetch_order(o["id"], SYM)
        cap = 0.25 * synbars.volume.iloc[START + 1]
        assert o["status"] == "open" and 0 < o["filled"] <= cap and o["filled"] == pytest.approx(cap, abs=1e-3)
        m = ex.create_order(SYM, "market", "buy", 3000.0)
        venue.step()
        m = ex.fetch_order(m["id"], SYM)
        assert m["status"] == "expired" and 0 <= m["filled"] < 3000.0  # the cap's remainder expires
    finally:
        stop()


def test_errors_map_to_ccxt_exceptions(served):
    venue, url, ex = served
    ex.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYM, "market", "buy", 500.0)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYM, "market", "sell", 6.0)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        ex.create_order(SYM, "market", "buy", 0.005)  # below minQty
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        ex.create_order(SYM, "limit", "buy", 1.0, 2_000_000.0)
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
        ex.create_order(SYM, "limit", "buy", 0.02, 1.0)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("999", SYM)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, SYM, params={"origClientOrderId": "nope"})
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order("999", SYM)
    ex.create_order(SYM, "limit", "buy", 0.1, 50.0, params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex.create_order(SYM, "limit", "buy", 0.1, 50.0, params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.BadSymbol):
        ex.public_get_klines({"symbol": "BTCUSDT", "interval": "1m"})
    assert venue.ledger()["balances"]["USDT"]["locked"] == pytest.approx(5.0)  # only the resting order


def test_authentication_errors(served):
    venue, url, ex = served
    bad = connect(url, "key", "wrong-secret")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        bad.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        connect(url, "other-key", "secret").fetch_balance()
    with pytest.raises(ccxt.InvalidNonce):
        ex.private_get_account({"timestamp": 1_000, "recvWindow": 5000})
    assert ex.fetch_balance()["USDT"]["free"] == 10_000.0
    assert venue.orders == []


@pytest.mark.parametrize(
    "kind, exc",
    [("5xx", ccxt.ExchangeNotAvailable), ("429", ccxt.DDoSProtection), ("418", ccxt.DDoSProtection)],
)
def test_faults(served, kind, exc):
    venue, url, ex = served
    ex.load_markets()
    admin(url, "/admin/fault", {"endpoint": "/api/v3/order", "kind": kind, "count": 2})
    for _ in range(2):
        with pytest.raises(exc):
            ex.create_order(SYM, "limit", "buy", 0.1, 50.0)
    assert venue.orders == []  # rejected before processing
    ex.create_order(SYM, "limit", "buy", 0.1, 50.0)  # the fault is spent
    assert len(venue.orders) == 1


def test_drop_response_processes_but_loses_the_ack(served):
    venue, url, ex = served
    ex.load_markets()
    venue.fault("/api/v3/order", "drop_response", 1)
    with pytest.raises(ccxt.NetworkError):
        ex.create_order(SYM, "limit", "buy", 0.1, 50.0, params={"clientOrderId": "lost-ack"})
    o = ex.fetch_order(None, SYM, params={"origClientOrderId": "lost-ack"})  # the order exists: reconcile by id
    assert (o["status"], o["amount"], o["price"]) == ("open", 0.1, 50.0)


def test_admin_off_by_default_and_bad_input(synbars):
    venue = Venue(synbars, start=START, keys={"k": "s"})
    url, stop = serve(venue)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            admin(url, "/admin/step")
        assert e.value.code == 404
    finally:
        stop()
    with pytest.raises(ValueError, match="replay ends"):
        venue.step(len(synbars))
    with pytest.raises(ValueError, match="fault kind"):
        venue.fault("/api/v3/order", "boom")


@pytest.mark.parametrize("creds", [{}, {"apiKey": "key", "secret": "secret"}])
def test_a_stock_ccxt_client_loads_markets(served, creds):
    "A plain ccxt.binance, default options, only its API URLs pointed at the venue: spot, futures, margin, coins."
    venue, url, _ = served
    ex = ccxt.binance(creds)
    assert ex.options["fetchMargins"] and ex.options["fetchCurrencies"]  # the defaults: both on
    ex.urls["api"] = local_urls(ex.urls["api"], url)
    markets = ex.load_markets()
    assert list(markets) == [SYM] and markets[SYM]["spot"] and not markets[SYM]["margin"]
    if creds:
        assert {"SYN", "USDT"} <= set(ex.currencies)  # ccxt adds BNFCR (futures credit) by itself
        assert not ex.currencies["USDT"]["deposit"] and not ex.currencies["USDT"]["withdraw"]
        assert ex.fetch_balance()["USDT"]["free"] == 10_000.0
    assert ex.fetch_ticker(SYM)["last"] == pytest.approx(venue.last)
