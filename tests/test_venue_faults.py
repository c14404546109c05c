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
