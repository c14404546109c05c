"""Fault suite of the execution core: the real ccxt.async_support.binance client against the paper venue on
127.0.0.1, one test per scenario, each asserting the end state in the venue's ledger and in the journal, and
printing faults injected, duplicates, lost orders and position mismatches (the last three must be 0)."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from intraday.binance import connect, serve
from intraday.config import LiveSettings, RiskSettings
from intraday.data import synth_market
from intraday.fills import FillModel
from intraday.journal import Journal
from intraday.orders import OrderStatus
from intraday.risk import Intent, Risk, TradingState
from intraday.router import ReconcileError, Router, ledger_audit
from intraday.venue import Venue

SYM, BASE = "SYN/USDT", "SYN"
GRACE = 1.0  # seconds an order may stay invisible before it counts as absent (short, so the suite is quick)


@pytest.fixture(scope="module")
def day():
    return synth_market(days=1, seed=1)


class Rig:
    "A venue served on 127.0.0.1, a state directory, and routers on them."

    def __init__(self, bars, tmp: Path, **venue_kw):
        kw = {"start": 100, "admin": True, "keys": {"k": "s"}, "balances": {"USDT": 100_000.0, "SYN": 0.0}}
        self.venue = Venue(bars, **(kw | venue_kw))
        self.url, self.stop = serve(self.venue)
        self.state = tmp / "state"
        self.routers: list[Router] = []

    async def router(self, runner="t", risk: RiskSettings | None = None, start=True, **live) -> Router:
        s = LiveSettings(
            **({"runner": runner, "unknown_grace_s": GRACE, "retry_base_s": 0.02, "retry_max_s": 0.5} | live)
        )
        r = Router(connect(self.url, "k", "s", asynchronous=True), Journal(self.state, runner=runner), SYM,
                   Risk(risk or RiskSettings()), s)  # fmt: skip
        self.routers.append(r)
        if start:
            await r.start()
        return r

    @property
    def last(self) -> float:
        return self.venue.last

    def tally(self, r: Router, name: str) -> dict:
        "Count from the venue's ledger; print the scenario's line."
        a = ledger_audit(self.venue.ledger(), r.journal, BASE)
        faults = sum(1 for e in self.venue.fault_state()["log"] if e["kind"])
        print(f"{name}: faults injected {faults}, duplicates {a['duplicates']}, lost {a['lost']}, "
              f"mismatches {a['mismatches']}, unresolved {a['unresolved']}")  # fmt: skip
        assert (a["duplicates"], a["lost"], a["mismatches"]) == (0, 0, 0), a
        return a | {"faults": faults}


@pytest.fixture
def rig(day, tmp_path):
    made = []

    def make(**kw):
        made.append(Rig(day, tmp_path, **kw))
        return made[-1]

    yield make
    for m in made:
        m.stop()


def run(coro):
    return asyncio.run(coro)


def venue_orders(rig: Rig) -> list[dict]:
    return rig.venue.ledger()["orders"]


# --- create -----------------------------------------------------------------------------------------------


def test_create_times_out_but_the_venue_accepted_it(rig):
    g = rig()

    async def main():
        r = await g.router()
        g.venue.fault("POST /api/v3/order", "drop_response")
        od = await r.submit(Intent("buy", 2.0))
        assert od.status == OrderStatus.OPEN and "absent" not in od.reason  # resolved by query, not re-sent
        g.venue.step()
        await r.sync(od)
        assert (od.status, od.filled) == (OrderStatus.FILLED, 2.0)
        kinds = [e["data"].get("event", e["kind"]) for e in r.journal.events(od.client_id)]
        assert kinds == ["intent", "SUBMIT", "UNKNOWN", "ACCEPT", "fill"]
        a = g.tally(r, "create times out, venue accepted")
        assert a["venue_orders"] == 1 and a["faults"] == 1
        await r.ex.close()

    run(main())


def test_create_lost_before_the_venue_saw_it_is_resent_under_a_new_id(rig):
    g = rig()

    async def main():
        r = await g.router()
        g.venue.fault("POST /api/v3/order", "drop_request")
        t0 = time.time()
        od = await r.submit(Intent("buy", 1.0))
        assert time.time() - t0 >= GRACE  # not re-sent before the grace window
        first = [o for o in r.journal.orders.values() if o.intent == od.intent]
        assert [o.status for o in first] == [OrderStatus.REJECTED, OrderStatus.OPEN]
        assert first[0].reason.startswith("absent") and first[0].client_id != od.client_id
        assert [o["clientOrderId"] for o in venue_orders(g)] == [od.client_id]
        g.tally(r, "create lost before the venue")
        await r.ex.close()

    run(main())


@pytest.mark.parametrize("kind", ["5xx", "429", "malformed"])
def test_ambiguous_create_answers_are_resolved_by_query(rig, kind):
    g = rig()

    async def main():
        r = await g.router()
        g.venue.fault("POST /api/v3/order", kind)
        od = await r.submit(Intent("buy", 1.0))
        assert od.status == OrderStatus.OPEN
        events = [e["data"].get("event") for e in r.journal.events() if e["kind"] == "transition"]
        assert "UNKNOWN" in events
        assert len(venue_orders(g)) == 1
        g.tally(r, f"{kind} on create")
        await r.ex.close()

    run(main())


def test_429_on_reads_is_retried_after_retry_after(rig):
    g = rig()

    async def main():
        r = await g.router()
        od = await r.submit(Intent("buy", 1.0))
        g.venue.step()
        g.venue.fault("GET /api/v3/order", "429", count=2)
        t0 = time.time()
        await r.sync(od)
        assert od.status == OrderStatus.FILLED
        assert time.time() - t0 >= 2 * 0.9  # Retry-After: 1 honoured twice
        assert r.retry.retries.get("query") == 2
        g.tally(r, "429 on reads")
        await r.ex.close()

    run(main())


def test_418_ban_stops_orders_until_it_ends(rig):
    g = rig()

    async def main():
        r = await g.router()
        g.venue.fault("POST /api/v3/order", "418")
        first = asyncio.create_task(r.submit(Intent("buy", 1.0)))
        await asyncio.sleep(0.3)
        assert r.retry.banned
        denied = await r.submit(Intent("buy", 1.0))
        assert denied.status == OrderStatus.DENIED and denied.reason.startswith("venue ban")
        od = await first  # resolved once the ban is over: absent (a 418 is not processed), re-sent
        assert od.status == OrderStatus.OPEN and not r.retry.banned
        g.tally(r, "418 ban")
        await r.ex.close()

    run(main())


def test_invalid_order_is_rejected_once_and_final(rig):
    g = rig()

    async def main():
        r = await g.router()
        g.venue.fault("POST /api/v3/order", "reject")
        od = await r.submit(Intent("buy", 1.0))
        assert od.status == OrderStatus.REJECTED and od.reason.startswith("InvalidOrder")
        assert venue_orders(g) == [] and r.retry.retries == {}
        g.tally(r, "invalid order")
        await r.ex.close()

    run(main())


def test_insufficient_funds_on_an_exit(rig):
    g = rig()

    async def main():
        r = await g.router()
        od = await r.submit(Intent("sell", 3.0))  # nothing to sell
        assert od.status == OrderStatus.REJECTED and od.reason.startswith("InsufficientFunds")
        g.tally(r, "insufficient funds on an exit")
        await r.ex.close()

    run(main())


# --- fills and cancels --------------------------------------------------------------------------------------


def test_partial_fill_then_cancel(rig):
    g = rig(fill_model=FillModel(participation=0.002))

    async def main():
        r = await g.router()
        od = await r.submit(Intent("buy", 20.0, "limit", round(g.last * 1.01, 2)))
        g.venue.step()
        await r.sync(od)
        assert od.status == OrderStatus.PARTIALLY_FILLED and 0 < od.filled < 20
        await r.cancel(od)
        assert od.status == OrderStatus.CANCELED and 0 < od.filled < 20
        assert r.journal.position() == pytest.approx(od.filled)
        g.tally(r, "partial fill then cancel")
        await r.ex.close()

    run(main())


def test_cancel_times_out_but_succeeds(rig):
    g = rig()

    async def main():
        r = await g.router()
        od = await r.submit(Intent("buy", 1.0, "limit", round(g.last * 0.98, 2)))
        g.venue.fault("DELETE /api/v3/order", "drop_response")
        await r.cancel(od)
        assert od.status == OrderStatus.CANCELED
        assert [o["status"] for o in venue_orders(g)] == ["CANCELED"]
        g.tally(r, "cancel times out, succeeds")
        await r.ex.close()

    run(main())


def test_cancel_of_an_order_that_filled_first(rig):
    g = rig()

    async def main():
        r = await g.router()
        od = await r.submit(Intent("buy", 1.0))
        g.venue.step()  # filled at the venue; the router has not looked yet
        await r.cancel(od)  # -2011 unknown order: the query says FILLED
        assert (od.status, od.filled) == (OrderStatus.FILLED, 1.0)
        g.tally(r, "cancel after the fill")
        await r.ex.close()

    run(main())


def test_order_not_found_for_3_s_after_its_ack_is_not_yet_never(rig):
    g = rig()

    async def main():
        r = await g.router(unknown_grace_s=5.0)
        g.venue.fault("POST /api/v3/order", "invisible", invisible_ms=3000)
        od = await r.submit(Intent("buy", 1.0, "limit", round(g.last * 0.98, 2)))
        assert od.status == OrderStatus.OPEN
        rep = await r.reconcile()  # open orders do not list it, a query does not find it: "not yet"
        assert not rep["mismatch"] and od.status == OrderStatus.OPEN and r.alerts == []
        assert (await r.query(od)) is None
        await asyncio.sleep(3.1)
        assert (await r.query(od)).client_id == od.client_id  # a typed report
        await r.cancel(od)
        assert od.status == OrderStatus.CANCELED and len(venue_orders(g)) == 1
        g.tally(r, "not found for 3 s after the ack")
        await r.ex.close()

    run(main())


def test_the_same_trade_reported_twice_is_applied_once(rig):
    g = rig()

    async def main():
        r = await g.router()
        od = await r.submit(Intent("buy", 2.0))
        g.venue.fault("GET /api/v3/myTrades", "duplicate_trade", count=3)
        g.venue.step()
        await r.sync(od)
        await r.reconcile()
        assert (od.status, od.filled) == (OrderStatus.FILLED, 2.0)
        assert len([e for e in r.journal.events(od.client_id) if e["kind"] == "fill"]) == len(
            g.venue.ledger()["trades"]
        )
        g.tally(r, "the same trade reported twice")
        await r.ex.close()

    run(main())


def test_a_fill_after_a_cancel_is_applied_and_the_order_stays_canceled(rig):
    g = rig()

    async def main():
        r = await g.router()
        od = await r.submit(Intent("buy", 1.5, "limit", round(g.last * 0.99, 2)))
        g.venue.fault("DELETE /api/v3/order", "late_fill")
        await r.cancel(od)
        assert (od.status, od.filled) == (OrderStatus.CANCELED, 0.0)
        g.venue.step()  # the trade that crossed before the cancel is booked now
        rep = await r.reconcile()
        assert rep["fills"] == 1 and not rep["mismatch"]
        assert (od.status, od.filled) == (OrderStatus.CANCELED, 1.5) and r.journal.position() == 1.5
        g.tally(r, "a fill after a cancel")
        await r.ex.close()

    run(main())


def test_a_cancel_that_times_out_but_succeeds(rig):
    g = rig()

    async def main():
        r = await g.router(timeout_ms=1000)
        r.ex.timeout = 1000
        od = await r.submit(Intent("buy", 1.0, "limit", round(g.last * 0.98, 2)))
        g.venue.fault("DELETE /api/v3/order", "cancel_timeout", cancel_timeout_ms=3000)
        await r.cancel(od)
        assert od.status == OrderStatus.CANCELED and r.retry.retries.get("cancel", 0) >= 1
        g.tally(r, "cancel times out (server side)")
        await r.ex.close()

    run(main())


# --- restarts -------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from intraday.config import LiveSettings
    from intraday.journal import Journal
    from intraday.risk import Intent
    from intraday.router import Router
    from intraday.binance import connect

    url, state, point, price = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    async def main():
        r = Router(connect(url, "k", "s", asynchronous=True), Journal(state, runner="t"), "SYN/USDT",
                   settings=LiveSettings(runner="t", unknown_grace_s=1.0), crash_at=point)
        await r.start()
        await r.submit(Intent("buy", 1.0, "limit", price))
        print("not killed")

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("point,at_venue,status", [
    ("before_send", 0, OrderStatus.REJECTED), ("after_send", 1, OrderStatus.OPEN), ("after_ack", 1, OrderStatus.OPEN),
])  # fmt: skip
def test_sigkill_then_restart_reconciles(rig, point, at_venue, status):
    g = rig()
    price = round(g.last * 0.98, 2)
    p = subprocess.run([sys.executable, "-c", CHILD, g.url, str(g.state), point, str(price)], capture_output=True,
                       text=True, timeout=120, env=os.environ | {"PYTHONPATH": os.getcwd()})  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert len(venue_orders(g)) == at_venue

    async def main():
        time.sleep(GRACE)
        r = await g.router()
        (od,) = r.journal.orders.values()
        assert od.status == status
        if status == OrderStatus.REJECTED:
            assert od.reason.startswith("absent")
        a = g.tally(r, f"SIGKILL {point}, restart")
        assert a["unresolved"] == 0
        await r.ex.close()

    run(main())


def test_foreign_open_order_is_cancelled_or_adopted(rig):
    g = rig()

    async def main():
        manual = connect(g.url, "k", "s", asynchronous=True)
        await manual.create_order(SYM, "limit", "buy", 1.0, round(g.last * 0.97, 2), {"newClientOrderId": "by_hand_1"})
        r = await g.router(foreign_orders="cancel")
        assert (await r.reconcile())["foreign"] == {}  # cancelled at start; nothing left to find
        assert [o["status"] for o in venue_orders(g)] == ["CANCELED"]
        g.tally(r, "foreign open order, cancel")
        await manual.create_order(SYM, "limit", "buy", 2.0, round(g.last * 1.01, 2), {"newClientOrderId": "by_hand_2"})
        r.settings = r.settings.model_copy(update={"foreign_orders": "adopt"})
        rep = await r.reconcile()
        assert rep["foreign"] == {"by_hand_2": "adopted"}
        g.venue.step()
        rep = await r.reconcile()  # its fill counts in the position, which still matches the venue
        assert not rep["mismatch"] and r.journal.position() == 2.0
        g.tally(r, "foreign open order, adopt")
        await manual.close()
        await r.ex.close()

    run(main())


def test_position_mismatch_halts_with_both_numbers(rig, capfd):
    g = rig()

    async def main():
        r = await g.router()
        manual = connect(g.url, "k", "s", asynchronous=True)
        await manual.create_order(SYM, "market", "buy", 1.5, None, {"newClientOrderId": "elsewhere_1"})
        g.venue.step()  # filled before the router ever saw it open
        rep = await r.reconcile()
        assert rep["mismatch"] and r.risk.state == TradingState.HALTED and not r.ready
        assert r.alerts[-1] == "position mismatch: journal 0 SYN, venue 1.5 SYN; trading halted"
        assert (await r.submit(Intent("buy", 1.0))).status == OrderStatus.DENIED
        await manual.close()
        await r.ex.close()

    run(main())


def test_reconciliation_that_cannot_complete_means_no_trading(rig):
    g = rig()

    async def main():
        r = await g.router(start=False, retry_attempts=2)
        g.venue.fault("GET /api/v3/openOrders", "5xx", count=5)
        with pytest.raises(ReconcileError, match="could not complete"):
            await r.start()
        assert (await r.submit(Intent("buy", 1.0))).reason.startswith("not reconciled")
        await r.ex.close()

    run(main())


# --- risk -----------------------------------------------------------------------------------------------------


def test_burst_at_5x_the_rate_cap_is_paced(rig):
    g = rig()

    async def main():
        r = await g.router(order_rate=10, order_burst=2, risk=RiskSettings(max_open_orders=100))
        px = round(g.last * 0.98, 2)
        t0 = time.time()
        ods = await asyncio.gather(*(r.submit(Intent("buy", 0.1, "limit", px)) for _ in range(50)))
        took = time.time() - t0
        assert all(o.status == OrderStatus.OPEN for o in ods)
        sent = sorted(e["data"]["sent"] for e in r.journal.events() if e["data"].get("event") == "SUBMIT")
        worst = max(sum(1 for t in sent if s <= t < s + 1.0) for s in sent)
        print(f"50 orders at once through a 10/s throttle: {took:.2f} s, at most {worst} in any second")
        assert took >= 48 / 10 * 0.9 and worst <= 10 + 2
        g.tally(r, "burst at 5x the rate cap")
        await r.ex.close()

    run(main())


def test_fat_fingers_are_denied_before_anything_is_sent(rig):
    g = rig()

    async def main():
        r = await g.router(risk=RiskSettings(max_position_qty=5, max_order_notional=300, price_band_bps=200))
        big = await r.submit(Intent("buy", 50.0))
        notional = await r.submit(Intent("buy", 4.0))
        band = await r.submit(Intent("buy", 1.0, "limit", round(g.last * 1.05, 2)))
        assert [o.status for o in (big, notional, band)] == [OrderStatus.DENIED] * 3
        assert big.reason.startswith("max position") and notional.reason.startswith("max order notional")
        assert band.reason.startswith("price band")
        assert venue_orders(g) == []
        assert [e["kind"] for e in r.journal.events(band.client_id)] == ["intent", "transition"]
        g.tally(r, "fat fingers")
        await r.ex.close()

    run(main())


def test_daily_loss_limit_halts_and_survives_a_restart(rig):
    g = rig()

    async def main():
        r = await g.router(risk=RiskSettings(daily_loss_limit=0.02))
        t = time.time()
        r.mark_equity(100_000.0, t)
        assert r.mark_equity(97_500.0, t + 1) == TradingState.HALTED
        assert (await r.submit(Intent("buy", 1.0))).reason.startswith("halted: daily loss 2.50%")
        await r.ex.close()
        r2 = await g.router(risk=RiskSettings(daily_loss_limit=0.02))
        assert r2.risk.state == TradingState.HALTED and r2.risk.halted_until > t
        g.tally(r2, "daily loss limit")
        await r2.ex.close()

    run(main())


def test_circuit_breaker_on_repeated_rejections(rig):
    g = rig()

    async def main():
        r = await g.router(risk=RiskSettings(reject_limit=3))
        g.venue.fault("POST /api/v3/order", "reject", count=10)
        ods = [await r.submit(Intent("buy", 1.0)) for _ in range(5)]
        assert [o.status for o in ods] == [OrderStatus.REJECTED] * 3 + [OrderStatus.DENIED] * 2
        assert r.risk.reason == "circuit breaker: 3 rejections in 60 s"
        assert len([e for e in g.venue.fault_state()["log"] if e["kind"] == "reject"]) == 3
        g.tally(r, "circuit breaker")
        await r.ex.close()

    run(main())


def test_kill_switch_with_open_orders_then_a_restart(rig):
    g = rig()

    async def main():
        r = await g.router(risk=RiskSettings(flatten_on_kill=True))
        await r.submit(Intent("buy", 2.0))
        g.venue.step()
        await r.reconcile()
        px = round(g.last * 0.98, 2)
        for _ in range(3):
            await r.submit(Intent("buy", 1.0, "limit", px))
        await r.kill("operator")
        g.venue.step()  # the flattening market order fills
        await r.reconcile()
        assert sorted(o["status"] for o in venue_orders(g)) == ["CANCELED"] * 3 + ["FILLED"] * 2
        assert r.journal.position() == 0.0
        await r.ex.close()
        r.journal.close()
        r2 = await g.router()
        assert r2.risk.state == TradingState.HALTED and r2.kill_file.exists()
        assert (await r2.submit(Intent("buy", 1.0))).reason == "halted: killed: operator"
        await r2.resume()
        assert (await r2.submit(Intent("buy", 1.0))).status == OrderStatus.OPEN
        g.tally(r2, "kill switch, restart")
        await r2.ex.close()

    run(main())
