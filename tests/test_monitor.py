import asyncio
import enum
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import aiohttp
import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from intraday.control import TOKEN_ENV, ControlServer, StateLock, StateLockError
from intraday.monitor import (
    STAGES,
    Monitor,
    RollingWindow,
    histogram_quantile,
    latency_buckets,
    latency_figure,
    write_latency_figure,
)
from intraday.obs import LATENCY_BUCKETS


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def records():
    "Loguru records emitted by intraday while the test runs."
    logger.enable("intraday")
    got = []
    sink = logger.add(lambda m: got.append(m.record), level="DEBUG")
    yield got
    logger.remove(sink)
    logger.disable("intraday")


@pytest.fixture(autouse=True)
def _no_token(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, **labels):
    hits = [s.value for f in fams.values() for s in f.samples if s.name == name and s.labels == labels]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


async def call(session, method, url, **kw):
    async with session.request(method, url, **kw) as r:
        return r.status, r.headers, await r.text()


def serve(server, *requests):
    "Start `server` in a fresh asyncio loop, make the requests (method, path, kwargs), stop it; the responses."

    async def main():
        async with server, aiohttp.ClientSession() as s:
            return [await call(s, m, server.url + p, **kw) for m, p, kw in requests]

    return asyncio.run(main())


# ---- metrics ---------------------------------------------------------------------------------------------------


def fed_monitor(**kw):
    m = Monitor(**kw)
    m.observe_times(bar_close=10.0, received=10.003, decided=10.0032, submitted=10.0033, acked=10.0123)
    m.observe("decision", 150e-6)
    for s in ("FILLED", "FILLED", "CANCELED"):
        m.count_order(s)
    m.count_fill(3)
    m.count_reject("-2010")
    m.count_retry("create_order")
    m.count_fault("timeout")
    m.count_mismatch()
    m.count_swap(accepted=True)
    m.count_swap(accepted=False)
    m.set_position(-0.25)
    m.set_equity(10_012.5)
    m.set_pnl(realized=15.0, unrealized=-2.5, fees=0.75)
    m.set_state("REDUCING")
    m.set_bundle("ab12cd", "/bundles/champion")
    return m


def test_metrics_scraped_from_a_real_server_parse_with_prometheus_parser():
    clock = FakeClock()
    m = fed_monitor(clock=clock)
    m.mark_feed()
    clock.t += 7.5
    [(status, headers, text)] = serve(ControlServer(m), ("GET", "/metrics", {}))
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    f = families(text)
    assert value(f, "intraday_feed_lag_seconds_count") == 1
    assert value(f, "intraday_decision_seconds_count") == 2
    assert value(f, "intraday_decision_seconds_sum") == pytest.approx(200e-6 + 150e-6, abs=1e-12)
    assert value(f, "intraday_submit_seconds_sum") == pytest.approx(100e-6, abs=1e-12)
    assert value(f, "intraday_ack_seconds_sum") == pytest.approx(9e-3, abs=1e-12)
    assert value(f, "intraday_bar_to_ack_seconds_sum") == pytest.approx(12.3e-3, abs=1e-12)
    assert value(f, "intraday_bar_to_ack_seconds_bucket", le="0.01") == 0
    assert value(f, "intraday_bar_to_ack_seconds_bucket", le="0.025") == 1
    assert value(f, "intraday_orders_total", status="FILLED") == 2
    assert value(f, "intraday_orders_total", status="CANCELED") == 1
    assert value(f, "intraday_orders_total", status="EXPIRED") == 0  # every final status exists from the start
    assert value(f, "intraday_fills_total") == 3
    assert value(f, "intraday_rejects_total", reason="-2010") == 1
    assert value(f, "intraday_retries_total", op="create_order") == 1
    assert value(f, "intraday_faults_total", kind="timeout") == 1
    assert value(f, "intraday_position_mismatch_total") == 1
    assert value(f, "intraday_bundle_swaps_total", result="refused") == 1
    assert value(f, "intraday_position") == -0.25
    assert value(f, "intraday_equity") == 10_012.5
    assert [value(f, "intraday_pnl", kind=k) for k in ("realized", "unrealized", "fees")] == [15.0, -2.5, 0.75]
    assert value(f, "intraday_trading_state") == 1
    states = {
        s: value(f, "intraday_trading_status", intraday_trading_status=s) for s in ("active", "reducing", "halted")
    }
    assert states == {"active": 0, "reducing": 1, "halted": 0}
    assert value(f, "intraday_feed_staleness_seconds") == 7.5
    assert value(f, "intraday_bundle_info", hash="ab12cd", path="/bundles/champion") == 1


def test_metric_names_follow_prometheus_conventions():
    f = families(fed_monitor().metrics_text())
    assert all(name.startswith("intraday_") for name in f)
    hists = {n for n, x in f.items() if x.type == "histogram"}
    assert hists == {f"intraday_{s}_seconds" for s in STAGES}
    counters = {n for n, x in f.items() if x.type == "counter"}
    assert all(s.name.endswith("_total") for n in counters for s in f[n].samples)
    assert {"intraday_orders", "intraday_fills", "intraday_rejects", "intraday_retries", "intraday_faults"} <= counters
    buckets = sorted(float(s.labels["le"]) for s in f["intraday_decision_seconds"].samples if "le" in s.labels)
    assert buckets == [*LATENCY_BUCKETS, math.inf]


def test_two_monitors_in_one_process_do_not_collide():
    a, b = Monitor(), Monitor()
    a.count_fill()
    b.set_state(2)
    fa, fb = families(a.metrics_text()), families(b.metrics_text())
    assert value(fa, "intraday_fills_total") == 1 and value(fb, "intraday_fills_total") == 0
    assert value(fa, "intraday_trading_state") == 0 and value(fb, "intraday_trading_state") == 2


def test_states_from_enums_names_and_numbers_and_one_clear_error():
    class IntState(enum.IntEnum):
        ACTIVE = 0
        REDUCING = 1
        HALTED = 2

    class StrState(enum.StrEnum):
        ACTIVE = "ACTIVE"
        REDUCING = "REDUCING"
        HALTED = "HALTED"

    m = Monitor()
    assert [m.set_state(s) for s in (IntState.HALTED, StrState.REDUCING, "active", 2)] == [
        "halted",
        "reducing",
        "active",
        "halted",
    ]
    with pytest.raises(ValueError, match="unknown trading state 'paused'.*active, reducing, halted"):
        m.set_state("paused")
    with pytest.raises(ValueError, match="unknown trading state 3"):
        m.set_state(3)
    assert m.state == "halted"


def test_bundle_swap_replaces_the_info_series():
    m = Monitor()
    m.set_bundle("old", "a")
    m.set_bundle("new", "b")
    info = [s for s in families(m.metrics_text())["intraday_bundle_info"].samples]
    assert [(s.labels, s.value) for s in info] == [({"hash": "new", "path": "b"}, 1.0)]


def test_bad_latency_input_is_refused_by_name():
    m = Monitor()
    with pytest.raises(ValueError, match="unknown latency stage 'route'"):
        m.observe("route", 1e-3)
    with pytest.raises(ValueError, match="stage 'ack' must be a finite"):
        m.observe("ack", math.inf)
    with pytest.raises(ValueError, match=r"unknown stages \['decisoin'\]"):
        Monitor(thresholds={"decisoin": 1e-3})
    with pytest.raises(ValueError, match="quantile must be in"):
        Monitor(quantile=99)


def test_time_context_manager_observes_also_on_error():
    m = Monitor()
    with m.time("decision"):
        sum(range(1000))
    with pytest.raises(KeyError), m.time("decision"):
        raise KeyError("x")
    assert m.quantiles()["decision"]["count"] == 2
    assert value(families(m.metrics_text()), "intraday_decision_seconds_count") == 2


# ---- rolling quantiles and alarms ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(st.floats(-1.0, 10.0, allow_nan=False), min_size=1, max_size=300),
    size=st.integers(1, 120),
    q=st.floats(0, 1),
)
def test_rolling_quantile_equals_numpy_over_the_last_n(xs, size, q):
    w = RollingWindow(size)
    for x in xs:
        w.add(x)
    tail = xs[-size:]
    assert len(w) == len(tail)
    assert w.quantile(q) == pytest.approx(np.quantile(tail, q), rel=1e-12, abs=1e-12)


def test_rolling_window_by_age_forgets_old_observations():
    clock = FakeClock(0.0)
    w = RollingWindow(1000, max_age=60, clock=clock)
    for i in range(120):
        clock.t = float(i)
        w.add(1.0 if i < 100 else 2.0)
    assert len(w) == 61 and w.quantile(0) == 1.0  # t = 59..119 kept
    clock.t = 160.0
    assert len(w) == 20 and w.quantile(0) == 2.0
    with pytest.raises(ValueError, match="max_age must be > 0"):
        RollingWindow(10, max_age=0)


def alarm_lines(records):
    return [(r["level"].name, r["extra"]["stage"]) for r in records if "threshold" in r["extra"]]


def test_alarm_warns_once_then_recovers_with_hysteresis(records):
    m = Monitor(thresholds={"decision": 1e-3, "bar_to_ack": 50e-3}, window=100, min_count=20, recover=0.9)
    fast, slow = 200e-6, 5e-3
    for _ in range(100):
        m.observe("decision", fast)
    assert alarm_lines(records) == []
    for _ in range(30):  # p99 far above 1 ms on every one of these: one warning only
        m.observe("decision", slow)
    assert alarm_lines(records) == [("WARNING", "decision")]
    w = records[-1]
    assert w["extra"]["quantile"] == 0.99 and w["extra"]["threshold"] == 1e-3 and w["extra"]["value"] == slow
    assert "decision p99 5.000 ms above its threshold 1.000 ms" in w["message"]
    assert m.quantiles()["decision"]["breached"] is True
    for _ in range(200):
        m.observe("decision", fast)
    assert alarm_lines(records) == [("WARNING", "decision"), ("INFO", "decision")]
    assert m.quantiles()["decision"]["breached"] is False
    for _ in range(10):
        m.observe("decision", slow)
    assert alarm_lines(records)[-1] == ("WARNING", "decision") and len(alarm_lines(records)) == 3
    for _ in range(60):
        m.observe("feed_lag", 3.0)  # no threshold on feed_lag: never judged
    assert len(alarm_lines(records)) == 3


@pytest.mark.parametrize(
    "recover, expected", [(0.8, ["WARNING", "INFO", "WARNING"]), (1.0, ["WARNING", "INFO"] * 3 + ["WARNING"])]
)
def test_a_quantile_hovering_at_the_threshold_does_not_flap(records, recover, expected):
    # p99 moves between 10.5 ms and 9 ms around a 10 ms threshold three times, then to 7 ms, then back up: with
    # recover = 0.8 only the drop to 7 ms (<= 8 ms) re-arms the alarm; with recover = 1 every dip does
    m = Monitor(thresholds={"bar_to_ack": 10e-3}, window=100, min_count=50, recover=recover)
    for level in [10.5e-3, 9e-3] * 3 + [7e-3, 10.5e-3]:
        for _ in range(100):
            m.observe("bar_to_ack", level)
    assert [lvl for lvl, _ in alarm_lines(records)] == expected


def test_no_alarm_before_min_count(records):
    m = Monitor(thresholds={"decision": 1e-3}, min_count=50)
    for _ in range(49):
        m.observe("decision", 1.0)
    assert alarm_lines(records) == []
    m.observe("decision", 1.0)
    assert alarm_lines(records) == [("WARNING", "decision")]


def test_quantiles_report_every_stage_for_state():
    m = Monitor(thresholds={"decision": 1e-3})
    xs = np.random.default_rng(3).lognormal(-8, 0.5, 700)
    for x in xs:
        m.observe("decision", float(x))
    q = m.quantiles()
    assert set(q) == set(STAGES)
    assert q["ack"] == {"count": 0, "p50": None, "p90": None, "p99": None, "threshold": None, "breached": False}
    d = q["decision"]
    assert d["count"] == 700 and d["threshold"] == 1e-3
    assert [d[k] for k in ("p50", "p90", "p99")] == pytest.approx(list(np.quantile(xs, [0.5, 0.9, 0.99])))
    json.dumps(q, allow_nan=False)  # strict JSON: no NaN


# ---- control server --------------------------------------------------------------------------------------------


def test_healthz_and_metrics_need_no_token():
    (h, _, body), (mstatus, _, _) = serve(ControlServer(Monitor()), ("GET", "/healthz", {}), ("GET", "/metrics", {}))
    assert h == 200 and json.loads(body) == {"alive": True, "pid": os.getpid()}
    assert mstatus == 200


def test_readyz_follows_reconciled_warm_and_feed_fresh():
    clock = FakeClock()
    m = Monitor(max_staleness=30, clock=clock)
    flags = {"reconciled": False, "warm": False}

    async def warm():  # async checks work too
        return flags["warm"]

    def broken():
        raise ConnectionError("venue unreachable")

    server = ControlServer(m, checks={"reconciled": lambda: flags["reconciled"], "warm": warm})

    async def main():
        seen = []
        async with server, aiohttp.ClientSession() as s:

            async def ready():
                status, _, body = await call(s, "GET", server.url + "/readyz")
                seen.append((status, json.loads(body)))

            await ready()  # nothing yet
            flags["reconciled"] = True
            await ready()
            m.mark_feed()
            await ready()
            flags["warm"] = True
            await ready()  # all true
            clock.t += 31
            await ready()  # the feed went stale
            m.mark_feed()
            server.checks["reconciled"] = broken
            await ready()
        return seen

    seen = asyncio.run(main())
    assert [(st, b["ready"], b["failing"]) for st, b in seen] == [
        (503, False, ["feed_fresh", "reconciled", "warm"]),
        (503, False, ["feed_fresh", "warm"]),
        (503, False, ["warm"]),
        (200, True, []),
        (503, False, ["feed_fresh"]),
        (503, False, ["reconciled"]),
    ]
    assert seen[3][1]["checks"] == {"feed_fresh": True, "reconciled": True, "warm": True}
    assert seen[5][1]["errors"] == {"reconciled": "ConnectionError: venue unreachable"}


class Side(enum.StrEnum):
    BUY = "buy"


def test_state_returns_the_callback_json_plus_quantiles():
    m = Monitor()
    m.set_state("HALTED")
    m.set_bundle("ab12", "/b")
    for x in (1e-4, 2e-4, 3e-4):
        m.observe("decision", x)
    last_bar = datetime(2024, 1, 1, 0, 5, tzinfo=UTC)

    async def state():
        return {"position": 0.5, "pnl": {"realized": 1.5}, "last_bar": last_bar, "open_orders": [{"side": Side.BUY}]}

    [(status, _, body)] = serve(ControlServer(m, state=state), ("GET", "/state", {}))
    got = json.loads(body)
    assert status == 200
    assert got["position"] == 0.5 and got["pnl"] == {"realized": 1.5}
    assert got["last_bar"] == "2024-01-01 00:05:00+00:00" and got["open_orders"] == [{"side": "buy"}]
    assert got["trading_state"] == "halted" and got["bundle"] == {"hash": "ab12", "path": "/b"}
    assert got["latency"]["decision"]["count"] == 3 and got["latency"]["decision"]["p50"] == pytest.approx(2e-4)
    assert got["feed_staleness_seconds"] is None  # no feed message yet (+Inf in /metrics)


def test_state_callback_failure_is_a_500_with_the_reason():
    def state():
        raise RuntimeError("journal locked")

    [(status, _, body)] = serve(ControlServer(Monitor(), state=state), ("GET", "/state", {}))
    assert status == 500 and json.loads(body) == {"error": "state callback failed: RuntimeError: journal locked"}


def test_callbacks_that_do_not_answer_fail_their_request_and_do_not_hold_stop():
    async def hang(*_):
        await asyncio.sleep(120)

    server = ControlServer(Monitor(), state=hang, checks={"warm": hang}, kill=hang, token="t", callback_timeout=0.2)
    auth = {"headers": {"Authorization": "Bearer t"}}
    (rs, _, rb), (ss, _, sb), (ks, _, kb) = serve(
        server, ("GET", "/readyz", {}), ("GET", "/state", {}), ("POST", "/kill", auth)
    )
    assert rs == 503 and json.loads(rb)["errors"] == {"warm": "no answer in 0.2 s"}
    assert ss == 500 and json.loads(sb) == {"error": "state callback failed: no answer in 0.2 s"}
    assert ks == 500 and json.loads(kb)["error"] == "no answer in 0.2 s"

    async def stop_while_busy():
        srv = await ControlServer(Monitor(), state=hang, callback_timeout=300, shutdown_timeout=0.5).start()
        async with aiohttp.ClientSession() as s:
            busy = asyncio.create_task(call(s, "GET", srv.url + "/state"))
            await asyncio.sleep(0.3)
            await asyncio.wait_for(srv.stop(), 30)  # not the callback's 120 s
            with pytest.raises(aiohttp.ClientError):
                await busy

    asyncio.run(stop_while_busy())


def test_kill_and_resume_refuse_when_no_token_is_configured():
    calls = []
    server = ControlServer(Monitor(), kill=calls.append, resume=calls.append)
    res = serve(server, ("POST", "/kill", {}), ("POST", "/resume", {"headers": {"Authorization": "Bearer x"}}))
    for status, _, body in res:
        assert status == 403
        assert json.loads(body)["error"] == f"control endpoints are disabled: no token configured (set {TOKEN_ENV})"
    assert calls == []


def test_kill_and_resume_need_the_bearer_token_from_the_environment(monkeypatch, records):
    token = "tok-3f9a1c0e77"
    monkeypatch.setenv(TOKEN_ENV, token)
    calls = []

    async def kill(reason):
        calls.append(("kill", reason))
        return {"state": "halted"}

    def resume(reason):
        calls.append(("resume", reason))

    server = ControlServer(Monitor(), kill=kill, resume=resume)
    auth = {"Authorization": f"Bearer {token}"}
    res = serve(
        server,
        ("POST", "/kill", {}),
        ("POST", "/kill", {"headers": {"Authorization": "Bearer tok-3f9a1c0e78"}}),
        ("POST", "/kill", {"headers": {"Authorization": f"Basic {token}"}}),
        ("POST", "/kill", {"headers": {"Authorization": f"Bearer {token}x"}}),
        ("GET", "/kill", {"headers": auth}),
        ("POST", "/kill", {"headers": auth, "json": {"reason": "drawdown"}}),
        ("POST", "/resume", {"headers": auth}),
        ("POST", "/kill", {"headers": auth, "data": "not json"}),
        ("POST", "/kill", {"headers": auth, "json": ["drawdown"]}),
    )
    statuses = [r[0] for r in res]
    assert statuses == [401, 401, 401, 401, 405, 202, 200, 400, 400]  # a kill is accepted, then runs on
    assert res[0][1]["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(res[0][2]) == {"error": "missing or wrong bearer token"}
    assert json.loads(res[5][2]) == {"ok": True, "action": "kill", "reason": "drawdown", "result": {"state": "halted"}}
    assert json.loads(res[6][2])["reason"] == "operator"
    assert calls == [("kill", "drawdown"), ("resume", "operator")]
    logged = " ".join(r["message"] + json.dumps(r["extra"], default=str) for r in records)
    assert "control: kill requested" in logged and "refused a request without the token" in logged
    assert token not in logged


def test_kill_callback_failure_and_unwired_resume(monkeypatch):
    def kill(reason):
        raise RuntimeError("router gone")

    server = ControlServer(Monitor(), kill=kill, token="t")
    auth = {"headers": {"Authorization": "Bearer t"}}
    (ks, _, kb), (rs, _, rb) = serve(server, ("POST", "/kill", auth), ("POST", "/resume", auth))
    assert ks == 500 and json.loads(kb) == {"ok": False, "action": "kill", "error": "RuntimeError: router gone"}
    assert rs == 501 and json.loads(rb) == {"error": "resume is not wired in this runner"}


def get(url, method="GET", token=None):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_thread_mode_serves_synchronous_callers_and_frees_the_port():
    m = Monitor()
    m.count_fill()
    kills = []
    with ControlServer(m, kill=kills.append, token="t") as server:
        port = server.port
        assert port > 0
        status, text = get(server.url + "/metrics")
        assert status == 200 and value(families(text), "intraday_fills_total") == 1
        assert get(server.url + "/kill", "POST", token="t")[0] == 202  # accepted: the kill runs on
    assert kills == ["operator"]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_taken_port_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"control server cannot listen on 127.0.0.1:{port}"):
            ControlServer(Monitor(), port=port).start_thread()

        async def main():
            await ControlServer(Monitor(), port=port).start()

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(main())


def test_a_loopback_session_through_ccxt_feeds_the_monitor_and_its_endpoints(tmp_path):
    "Bars pushed by the paper venue through ccxt.pro, market orders acked through ccxt: what the runner will do."
    from intraday.binance import connect
    from intraday.binance import serve as serve_venue
    from intraday.data import synth_market
    from intraday.venue import Venue

    venue = Venue(synth_market(days=1, seed=1), start=100, keys={"k": "s"}, balances={"USDT": 1e6, "SYN": 100.0})
    url, stop_venue = serve_venue(venue)
    mon = Monitor(thresholds={"decision": 1e-3, "bar_to_ack": 5.0}, min_count=5)
    book = {"position": 0.0}
    n = 12

    async def session():
        ex = connect(url, "k", "s", pro=True)
        await ex.load_markets()
        warm = {"ok": False}
        server = ControlServer(
            mon, state=lambda: dict(book), checks={"warm": lambda: warm["ok"], "reconciled": lambda: True}
        )
        seen, ids = {}, []
        async with server, aiohttp.ClientSession() as http:
            seen["before"] = await call(http, "GET", server.url + "/readyz")
            for _ in range(n):
                watch = asyncio.ensure_future(ex.watch_ohlcv("SYN/USDT", "1m"))
                await asyncio.sleep(0.05)  # the watch waits before the bar closes, as a runner's does
                closed = time.perf_counter()
                venue.step()
                candles = await asyncio.wait_for(watch, 10)
                received = time.perf_counter()
                mon.mark_feed()
                side = "buy" if candles[-1][4] >= candles[-1][1] else "sell"  # a stand-in for the policy
                decided = submitted = time.perf_counter()
                order = await ex.create_order("SYN/USDT", "market", side, 1.0)
                acked = time.perf_counter()
                mon.observe_times(
                    bar_close=closed, received=received, decided=decided, submitted=submitted, acked=acked
                )
                ids.append(order["id"])  # acked NEW: the venue fills a market order in the next bar
                warm["ok"] = True
            venue.step()
            for oid in ids:  # final statuses and fills, as the runner's order stream would report them
                final = await ex.fetch_order(oid, "SYN/USDT")
                mon.count_order("FILLED" if final["status"] == "closed" else final["status"])
                mon.count_fill()
                book["position"] += final["filled"] if final["side"] == "buy" else -final["filled"]
            mon.set_position(book["position"])
            seen["after"] = await call(http, "GET", server.url + "/readyz")
            seen["metrics"] = await call(http, "GET", server.url + "/metrics")
            seen["state"] = await call(http, "GET", server.url + "/state")
        await ex.close()
        return seen

    try:
        seen = asyncio.run(session())
    finally:
        stop_venue()
    assert seen["before"][0] == 503 and seen["after"][0] == 200
    f = families(seen["metrics"][2])
    assert [value(f, f"intraday_{s}_seconds_count") for s in STAGES] == [n] * 5
    assert value(f, "intraday_orders_total", status="FILLED") == n and value(f, "intraday_fills_total") == n
    assert value(f, "intraday_position") == book["position"]
    state = json.loads(seen["state"][2])
    assert state["position"] == book["position"] and state["latency"]["bar_to_ack"]["count"] == n
    lat = state["latency"]
    assert lat["bar_to_ack"]["p50"] >= lat["ack"]["p50"] > 0  # bar -> ack contains submit -> ack
    written = write_latency_figure(seen["metrics"][2], tmp_path / "session")
    assert "decision (receipt -" in written[0].read_text()  # plotly escapes the ">"


# ---- state-directory lock --------------------------------------------------------------------------------------

HOLD = """
import sys, time
from intraday.control import StateLock, StateLockError
try:
    StateLock(sys.argv[1]).acquire()
except StateLockError as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(3)
print("locked", flush=True)
time.sleep(120)
"""


def spawn(state_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )


def test_state_lock_refuses_a_second_runner_and_survives_kill_9(tmp_path):
    state_dir = tmp_path / "state"
    holder = spawn(state_dir)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = spawn(state_dir)  # a second process on the same state dir refuses to start
        _, err = second.communicate(timeout=60)
        assert second.returncode == 3
        assert err.strip().startswith(f"state dir {state_dir} is in use by pid {holder.pid} on {socket.gethostname()}")
        with pytest.raises(StateLockError, match=f"in use by pid {holder.pid}"):
            StateLock(state_dir).acquire()
        assert StateLock(state_dir).holder()["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    with StateLock(state_dir) as lock:  # the kernel released the dead process's lock
        assert lock.held and lock.holder()["pid"] == os.getpid() == lock.info["pid"]
        datetime.fromisoformat(lock.holder()["started"])
    assert not lock.held and lock.holder() == {}
    lock.acquire()
    lock.acquire()  # idempotent while held
    lock.release()
    lock.release()


def test_state_lock_in_one_process_and_a_bad_dir(tmp_path):
    with StateLock(tmp_path):
        with pytest.raises(StateLockError, match=f"state dir {tmp_path} is in use by pid {os.getpid()}"):
            StateLock(tmp_path).acquire()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateLockError, match="cannot open the lock file .*file/runner.lock"):
        StateLock(tmp_path / "file").acquire()


# ---- latency figure --------------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_within_a_bucket_like_prometheus():
    le = [1.0, 2.0, 4.0, math.inf]
    cum = [10, 30, 40, 40]
    assert histogram_quantile(0.5, le, cum) == pytest.approx(1.5)  # rank 20: halfway through (1, 2]
    assert histogram_quantile(0.25, le, cum) == pytest.approx(1.0)
    assert histogram_quantile(0.05, le, cum) == pytest.approx(0.2)  # rank 2 of 10 in (0, 1]: the first starts at 0
    assert histogram_quantile(0.99, [1.0, math.inf], [1, 100]) == 1.0  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile(0.5, le, [0, 0, 0, 0]))


def test_latency_figure_from_a_scrape_marks_p50_and_p99(tmp_path, records):
    m = Monitor(thresholds={})
    rng = np.random.default_rng(5)
    dec = rng.lognormal(math.log(200e-6), 0.5, 3000)
    for x in dec:
        m.observe("decision", float(x))
    for x in rng.lognormal(math.log(6e-3), 0.3, 3000):
        m.observe("bar_to_ack", float(x))
    [(_, _, text)] = serve(ControlServer(m), ("GET", "/metrics", {}))
    b = latency_buckets(text)
    assert b["decision"]["count"] == 3000 and b["decision"]["cum"][-1] == 3000
    assert b["decision"] == latency_buckets(m.registry)["decision"]
    true99 = np.quantile(dec, 0.99)
    est99 = histogram_quantile(0.99, b["decision"]["le"], b["decision"]["cum"])
    i = int(np.searchsorted(b["decision"]["le"], true99))
    assert b["decision"]["le"][i - 1] <= est99 <= b["decision"]["le"][i]

    fig = latency_figure(text)
    assert [t.type for t in fig.data] == ["bar", "scatter", "bar", "scatter"]
    assert [sum(t.y) for t in fig.data if t.type == "bar"] == pytest.approx([1.0, 1.0])  # shares per stage
    assert len(fig.layout.shapes) == 4  # p50 and p99 in each of the two stages
    titles = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("decision (receipt -> decision): n=3000, p50 ≈") for t in titles)
    assert any(t.startswith("p99 ") for t in titles)

    written = write_latency_figure(text, tmp_path / "latency", title="session latency")
    html = (tmp_path / "latency.html").read_text()
    assert written[0] == tmp_path / "latency.html" and "plotly" in html and "bar_to_ack" in html
    try:
        import kaleido  # noqa: F401

        has_kaleido = True
    except ImportError:
        has_kaleido = False
    if not has_kaleido:
        assert written == [tmp_path / "latency.html"]
        assert any("kaleido is not installed" in r["message"] for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temp files left

    with pytest.raises(ValueError, match="no latency observations"):
        latency_figure(Monitor().registry)


def test_png_export_that_fails_leaves_html_only_and_no_temp_file(tmp_path, records, monkeypatch):
    # kaleido present but unusable (no Chrome, say): pretend it is installed, so plotly's own export error is hit
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "kaleido" else real(name, *a))
    m = Monitor()
    m.observe("ack", 2e-3)
    written = write_latency_figure(m.registry, tmp_path / "lat")
    assert written == [tmp_path / "lat.html"] and [p.name for p in tmp_path.iterdir()] == ["lat.html"]
    assert [r["message"] for r in records if r["level"].name == "WARNING"] == [
        "latency figure: PNG export failed, HTML only"
    ]
