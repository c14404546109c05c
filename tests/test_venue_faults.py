"Seeded fault profiles of the paper venue, seen through the real ccxt clients on 127.0.0.1."

import asyncio
import json
import time
import urllib.error
import urllib.request

import ccxt
import pytest
import yaml

from intraday.binance import connect, serve
from intraday.data import synth_market
from intraday.faults import FaultProfile
from intraday.venue import Venue

SYM = "SYN/USDT"
BARS = synth_market(days=1, seed=1)
ORDER = "POST /api/v3/order"


@pytest.fixture
def served():
    venue = Venue(BARS, start=100, keys={"k": "s"}, admin=True)
    url, stop = serve(venue)
    try:
        yield venue, url
    finally:
        stop()


def post(url: str, data: dict | None = None) -> tuple[int, dict, dict]:
    "POST JSON to the venue: status, headers, body (errors too)."
    req = urllib.request.Request(url, data=json.dumps(data or {}).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.mark.parametrize(
    "kind, exc, placed",
    [
        ("5xx", ccxt.ExchangeNotAvailable, False),
        ("429", ccxt.DDoSProtection, False),  # ccxt 4.5.90 maps HTTP 429 to DDoSProtection, not RateLimitExceeded
        ("418", ccxt.DDoSProtection, False),
        ("drop_request", ccxt.NetworkError, False),
        ("drop_response", ccxt.NetworkError, True),
        ("reject", ccxt.InvalidOrder, False),
    ],
)
def test_each_kind_raises_what_ccxt_raises(served, kind, exc, placed):
    venue, url = served
    venue.set_faults({"seed": 1, "endpoints": {ORDER: {kind: 1.0}}})
    ex = connect(url, "k", "s")
    ex.load_markets()
    with pytest.raises(exc):
        ex.create_order(SYM, "limit", "buy", 0.1, 50.0, params={"clientOrderId": f"f-{kind}"})
    assert len(venue.orders) == int(placed)
    assert [e["kind"] for e in venue.fault_state()["log"]] == [kind]
    if placed:  # reconcile by client order id: GET /api/v3/order has no rule
        assert ex.fetch_order(None, SYM, params={"origClientOrderId": f"f-{kind}"})["status"] == "open"


def test_malformed_body_raises_nothing_in_ccxt(served):
    venue, url = served
    venue.set_faults({"endpoints": {ORDER: {"malformed": 1.0}, "/api/v3/klines": {"malformed": 1.0}}})
    ex = connect(url, "k", "s")
    ex.load_markets()
    o = ex.create_order(SYM, "limit", "buy", 0.1, 50.0, params={"clientOrderId": "garbled"})
    assert (o["id"], o["status"]) == (None, None) and isinstance(o["info"], str)  # what a caller must check
    assert venue.orders[0]["clientOrderId"] == "garbled"  # processed
    assert all(row[4] is None for row in ex.fetch_ohlcv(SYM, "1m", limit=5))


def test_429_and_418_carry_retry_after(served):
    venue, url = served
    for kind in ("429", "418"):
        venue.fault("/api/v3/ping", kind)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/api/v3/ping", timeout=5)
        assert (e.value.code, e.value.headers["Retry-After"]) == (int(kind), "1")
        assert json.loads(e.value.read())["code"] == -1003


def test_latency_delays_and_times_out(served):
    venue, url = served
    venue.set_faults({"endpoints": {"GET /api/v3/ticker/24hr": {"latency": {"fixed": 300}}}})
    ex = connect(url, "k", "s")
    ex.load_markets()
    t0 = time.perf_counter()
    assert ex.fetch_ticker(SYM)["last"] == pytest.approx(venue.last)
    assert time.perf_counter() - t0 >= 0.3
    with pytest.raises(ccxt.RequestTimeout):
        connect(url, "k", "s", timeout=100).fetch_ticker(SYM)
    assert [e["latency_ms"] for e in venue.fault_state()["log"]] == [300.0, 300.0]


def test_lost_ack_on_create_order_async(served):
    venue, url = served
    post(url + "/admin/faults", {"seed": 3, "endpoints": {ORDER: {"drop_response": 1.0}}})

    async def main():
        ex = connect(url, "k", "s", asynchronous=True)
        try:
            await ex.load_markets()
            with pytest.raises(ccxt.NetworkError):
                await ex.create_order(SYM, "market", "buy", 1.0, params={"clientOrderId": "lost-1"})
            return await ex.fetch_order(None, SYM, params={"origClientOrderId": "lost-1"})
        finally:
            await ex.close()

    o = asyncio.run(main())
    (od,) = venue.ledger()["orders"]
    assert (od["clientOrderId"], od["status"], od["type"]) == ("lost-1", "NEW", "MARKET")
    assert (o["id"], o["clientOrderId"], o["amount"], o["status"]) == (str(od["orderId"]), "lost-1", 1.0, "open")


PROFILE = {
    "seed": 11,
    "endpoints": {
        ORDER: {"5xx": 0.1, "429": 0.05, "drop_request": 0.1, "drop_response": 0.1, "malformed": 0.05,
                "reject": 0.1, "latency": {"uniform": [0, 2]}},
        "*": {"latency": {"exponential": 0.5}},
    },
}  # fmt: skip


def session(profile: FaultProfile | dict, n: int = 40) -> tuple[list[str], list[dict]]:
    "Place `n` orders against a fresh venue with `profile`: what ccxt said each time, and the fault log."
    venue = Venue(BARS, start=100, keys={"k": "s"}, faults=profile)
    url, stop = serve(venue)
    try:
        ex = connect(url, "k", "s")
        ex.load_markets()
        said = []
        for i in range(n):
            try:
                o = ex.create_order(SYM, "limit", "buy", 0.1, 50.0, params={"clientOrderId": f"s-{i}"})
                said.append("ok" if o["id"] else "garbled")
            except ccxt.BaseError as e:
                said.append(type(e).__name__)
        return said, venue.fault_state()["log"]
    finally:
        stop()


def test_a_seeded_profile_repeats(tmp_path):
    first, log1 = session(PROFILE)
    (tmp_path / "faults.yaml").write_text(yaml.safe_dump(PROFILE))
    second, log2 = session(FaultProfile.load(tmp_path / "faults.yaml"))
    assert first == second and log1 == log2
    assert {"ok", "garbled", "InvalidOrder", "ExchangeNotAvailable", "NetworkError"} <= set(first)
    assert [e["kind"] for e in log1 if e["path"] == "/api/v3/order"].count(None) == first.count("ok")
    (tmp_path / "faults.json").write_text(json.dumps(PROFILE))
    other, _ = session(FaultProfile.load(tmp_path / "faults.json", seed=12))
    assert other != first


def test_profile_files_and_admin_errors(served, tmp_path):
    venue, url = served
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  /api/v3/order:\n    5xx: 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: fault profile, endpoint '/api/v3/order': 5xx must be a probab"):
        FaultProfile.load(bad)
    bad.write_text("seeds: 1\n")
    with pytest.raises(ValueError, match="keys seed and endpoints"):
        FaultProfile.load(bad)
    with pytest.raises(ValueError, match="missing.yaml"):
        FaultProfile.load(tmp_path / "missing.yaml")
    status, _, body = post(url + "/admin/faults", {"endpoints": {"/api/v3/klines": {"reject": 0.5}}})
    assert status == 400 and "reject applies to POST /api/v3/order only" in body["msg"]
    status, _, body = post(url + "/admin/faults", {"seed": 5, "endpoints": {ORDER: {"5xx": 0.5}}})
    assert status == 200 and body["profile"] == {"seed": 5, "endpoints": {ORDER: {"5xx": 0.5}}}
    assert post(url + "/admin/faults", {})[2]["profile"] is None
    assert venue.profile is None


def test_invisible_order_is_acked_then_not_found_for_a_while(served):
    venue, url = served
    venue.fault(ORDER, "invisible", invisible_ms=600)
    ex = connect(url, "k", "s")
    ex.load_markets()
    o = ex.create_order(SYM, "limit", "buy", 1.0, 50.0, params={"clientOrderId": "ghost"})
    assert (o["id"], o["clientOrderId"], o["status"]) == ("1", "ghost", "open")  # acked normally
    t0 = time.monotonic()
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        ex.fetch_order(o["id"], SYM)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, SYM, params={"origClientOrderId": "ghost"})
    assert ex.fetch_open_orders(SYM) == [] and ex.fetch_orders(SYM) == []
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):  # resending the same client id is refused meanwhile
        ex.create_order(SYM, "limit", "buy", 1.0, 50.0, params={"clientOrderId": "ghost"})
    assert time.monotonic() - t0 < 0.6
    time.sleep(max(0.0, 0.65 - (time.monotonic() - t0)))
    assert ex.fetch_order(o["id"], SYM)["status"] == "open"
    assert [x["clientOrderId"] for x in ex.fetch_open_orders(SYM)] == ["ghost"]
    assert venue.fault_state()["counts"] == {"invisible": 1}


def test_invisible_hides_trades_and_defaults_to_3_s(served):
    venue, url = served
    venue.set_faults({"seed": 2, "endpoints": {ORDER: {"invisible": 1.0}}})
    ex = connect(url, "k", "s")
    ex.load_markets()
    o = ex.create_order(SYM, "market", "buy", 1.0)
    venue.step()
    assert venue.orders[0]["status"] == "FILLED" and len(venue.trades) == 1
    assert ex.fetch_my_trades(SYM) == [] and ex.fetch_orders(SYM) == []
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(o["id"], SYM)
    hidden = venue.orders[0]["_hidden_until"] - time.time() * 1000
    assert 2000 < hidden <= 3000  # the default invisible_ms


def test_duplicate_trade_in_my_trades(served):
    venue, url = served
    ex = connect(url, "k", "s")
    ex.load_markets()
    ex.create_order(SYM, "market", "buy", 1.0)
    ex.create_order(SYM, "market", "buy", 2.0)
    venue.step()
    venue.fault("GET /api/v3/myTrades", "duplicate_trade")
    twice = ex.fetch_my_trades(SYM)
    assert [t["id"] for t in twice] == ["1", "2", "2"] and twice[1]["amount"] == twice[2]["amount"] == 2.0
    assert [t["id"] for t in ex.fetch_my_trades(SYM)] == ["1", "2"]  # spent
    assert len(venue.trades) == 2


@pytest.mark.parametrize("kind", ["limit", "market"])
def test_late_fill_after_an_acknowledged_cancel(served, kind):
    venue, url = served
    ex = connect(url, "k", "s")
    ex.load_markets()
    venue.fault("DELETE /api/v3/order", "late_fill")
    o = ex.create_order(SYM, kind, "buy", 2.0, 50.0 if kind == "limit" else None, params={"clientOrderId": "late"})
    canceled = ex.cancel_order(o["id"], SYM)
    at_cancel = venue.now
    assert (canceled["status"], canceled["filled"]) == ("canceled", 0.0)
    assert venue.ledger()["balances"]["USDT"]["locked"] > 0  # kept for the late fill
    venue.step()
    after = ex.fetch_order(o["id"], SYM)
    assert (after["status"], after["filled"], after["remaining"]) == ("canceled", 2.0, 0.0)
    (t,) = ex.fetch_my_trades(SYM)
    assert (t["order"], t["amount"], t["timestamp"]) == (o["id"], 2.0, at_cancel)  # crossed before the cancel
    if kind == "limit":
        assert t["price"] == min(50.0, BARS.open.iloc[101])
    led = venue.ledger()
    usdt, syn = led["balances"]["USDT"], led["balances"]["SYN"]
    assert usdt["locked"] == 0.0 and syn == {"free": 2.0, "locked": 0.0, "total": 2.0}
    assert usdt["total"] == pytest.approx(10_000.0 - t["cost"] - t["fee"]["cost"], abs=1e-9)
    assert led["orders"][0]["status"] == "CANCELED"


def test_late_fill_of_a_partly_filled_sell(served):
    venue, url = served
    big = Venue(BARS, start=100, keys={"k": "s"}, balances={"USDT": 0.0, "SYN": 1e5})
    burl, stop = serve(big)
    try:
        ex = connect(burl, "k", "s")
        ex.load_markets()
        o = ex.create_order(SYM, "limit", "sell", 3000.0, 1.0)  # fills over several bars (participation cap)
        big.step()
        part = ex.fetch_order(o["id"], SYM)
        assert 0 < part["filled"] < 3000.0 and part["status"] == "open"
        big.fault("DELETE /api/v3/order", "late_fill")
        ex.cancel_order(o["id"], SYM)
        big.step()
        done = ex.fetch_order(o["id"], SYM)
        assert (done["status"], done["filled"]) == ("canceled", 3000.0)
        led = big.ledger()["balances"]
        assert led["SYN"] == {"free": 1e5 - 3000.0, "locked": 0.0, "total": 1e5 - 3000.0}
        assert led["USDT"]["total"] == pytest.approx(sum(t["quoteQty"] - t["commission"] for t in big.trades))
    finally:
        stop()


def test_cancel_timeout_cancels_but_the_answer_never_comes(served):
    venue, url = served
    ex = connect(url, "k", "s", timeout=300)
    ex.load_markets()
    o = ex.create_order(SYM, "limit", "buy", 1.0, 50.0)
    venue.fault("DELETE /api/v3/order", "cancel_timeout", cancel_timeout_ms=600)
    t0 = time.perf_counter()
    with pytest.raises(ccxt.RequestTimeout):
        ex.cancel_order(o["id"], SYM)
    assert time.perf_counter() - t0 < 0.6
    assert ex.fetch_order(o["id"], SYM)["status"] == "canceled"  # it happened
    assert venue.ledger()["balances"]["USDT"] == {"free": 10_000.0, "locked": 0.0, "total": 10_000.0}
    o2 = ex.create_order(SYM, "limit", "buy", 1.0, 50.0)
    venue.fault("DELETE /api/v3/order", "cancel_timeout", cancel_timeout_ms=100)  # shorter than the client's timeout
    with pytest.raises(ccxt.NetworkError):
        connect(url, "k", "s", timeout=2000).cancel_order(o2["id"], SYM)
    assert venue.orders[1]["status"] == "CANCELED"


def test_new_kinds_drawn_from_a_profile_and_counted(served):
    venue, url = served
    profile = {"seed": 4, "endpoints": {ORDER: {"invisible": 0.5, "invisible_ms": 50},
                                        "DELETE /api/v3/order": {"late_fill": 0.5},
                                        "GET /api/v3/myTrades": {"duplicate_trade": 0.5}}}  # fmt: skip
    post(url + "/admin/faults", profile)
    ex = connect(url, "k", "s")
    ex.load_markets()
    ids = [ex.create_order(SYM, "limit", "buy", 0.1, 50.0 + i)["id"] for i in range(20)]
    for i in ids:
        ex.cancel_order(i, SYM)
    venue.step()
    for _ in range(10):
        ex.fetch_my_trades(SYM)
    st = venue.fault_state()
    log = st["log"]
    assert st["counts"] == {k: sum(e["kind"] == k for e in log) for k in ("invisible", "late_fill", "duplicate_trade")}
    assert all(0 < n < 20 for n in st["counts"].values()), st["counts"]
    late = sum(e["kind"] == "late_fill" for e in log)
    assert sum(od["executedQty"] > 0 for od in venue.orders) == late  # every late fill happened, no other fill
    assert all(od["status"] == "CANCELED" for od in venue.ledger()["orders"])
    status, _, body = post(url + "/admin/fault", {"endpoint": ORDER, "kind": "invisible", "invisible_ms": -5})
    assert status == 400 and "invisible_ms must be a number of ms >= 0" in body["msg"]
    status, _, body = post(url + "/admin/fault", {"endpoint": "/api/v3/order", "kind": "late_fill"})
    assert status == 400 and "late_fill applies to DELETE /api/v3/order only" in body["msg"]
    status, _, body = post(
        url + "/admin/fault", {"endpoint": ORDER, "kind": "invisible", "count": 2, "invisible_ms": 9}
    )
    assert (status, body["faults"]) == (200, {ORDER: [["invisible", 2, {"invisible_ms": 9}]]})
