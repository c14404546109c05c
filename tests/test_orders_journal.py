"""Orders, journal and risk: properties of the transition table, journal replay, client-id uniqueness across
processes, and durability of acknowledged writes when the process is killed."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intraday.client import OrderReport
from intraday.config import RiskSettings
from intraday.journal import Journal, JournalError, StorageError
from intraday.orders import (
    CLIENT_ID_RE,
    PREVIOUS,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Order,
    OrderEvent,
    OrderStatus,
    OverFill,
    from_wire,
    next_status,
    to_wire,
)
from intraday.risk import Intent, Risk, TradingState

FOREIGN = OrderReport("9", "x9", OrderStatus.OPEN, "open", 0.0, (), "buy", "limit", 2.0, 5.0)  # an order not ours

events = st.lists(st.sampled_from(list(OrderEvent)), max_size=30)


@given(events)
def test_orders_move_only_along_the_table(seq):
    od = Order("c1", "SYN/USDT", "buy", "limit", 1.0, price=1.0)
    for e in seq:
        before, prev = od.status, od.previous
        want = TRANSITIONS.get((before, e))
        if want is None:
            with pytest.raises(IllegalTransition, match=f"order c1: event {e.value} is illegal in state {before}"):
                od.apply(e)
            assert od.status == before  # an illegal event changes nothing
        else:
            od.apply(e)
            assert od.status == (prev if want == PREVIOUS else want)
        if before in TERMINAL and od.status != before:  # out of a terminal state: only a late completing fill
            assert e == OrderEvent.FILL and od.status == OrderStatus.FILLED


def test_terminal_states_and_wire_names():
    for s in TERMINAL:
        outs = {t for (a, e), t in TRANSITIONS.items() if a == s and t != s}
        assert outs <= {OrderStatus.FILLED}
    assert all(from_wire(to_wire(s)) == s for s in OrderStatus if s not in (OrderStatus.INITIALIZED, OrderStatus.DENIED,
               OrderStatus.SUBMITTING, OrderStatus.UNKNOWN))  # fmt: skip
    with pytest.raises(IllegalTransition, match="needs the previous state"):
        next_status(OrderStatus.PENDING_CANCEL, OrderEvent.CANCEL_REJECT)


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0.01, 0.5)), max_size=40))
def test_fills_once_per_trade_never_beyond_the_quantity(trades):
    od = Order("c1", "SYN/USDT", "sell", "market", 1.0, status=OrderStatus.OPEN)
    applied: dict[int, float] = {}
    for tid, q in trades:
        if tid in applied:
            assert od.apply_fill(str(tid), q, 10.0) is False
        elif sum(applied.values()) + q > 1.0 + 1e-9:
            with pytest.raises(OverFill, match="refused"):
                od.apply_fill(str(tid), q, 10.0)
        else:
            assert od.apply_fill(str(tid), q, 10.0) is True
            applied[tid] = q
    assert od.filled == pytest.approx(sum(applied.values()))
    done = abs(od.filled - 1.0) <= 2e-9
    assert od.status == (OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED if applied else OrderStatus.OPEN)


ops = st.lists(st.sampled_from(["new", "submit", "accept", "fill", "cancel_req", "cancel", "reject", "note"]),
               max_size=40)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(ops)
def test_journal_replay_rebuilds_the_same_orders(tmp_path_factory, seq):
    d = tmp_path_factory.mktemp("j")
    j = Journal(d, runner="p")
    trade = 0
    for op in seq:
        od = list(j.orders.values())[-1] if j.orders else None
        try:
            if op == "new" or od is None:
                j.new_order("SYN/USDT", "buy", "limit", 3.0, 10.0)
            elif op == "submit":
                j.transition(od, OrderEvent.SUBMIT, sent=time.time())
            elif op == "accept":
                j.transition(od, OrderEvent.ACCEPT)
            elif op == "fill":
                trade += 1
                j.fill(od, str(trade), 1.0, 10.0 + trade, 0.01)
            elif op == "cancel_req":
                j.transition(od, OrderEvent.CANCEL_REQUEST)
            elif op == "cancel":
                j.transition(od, OrderEvent.CANCEL)
            elif op == "reject":
                j.transition(od, OrderEvent.REJECT, "no")
            else:
                j.record("state", baseline=float(trade))
        except (IllegalTransition, OverFill):
            pass
    again = Journal(d, runner="p")
    assert again.orders == j.orders and again.state == j.state and again.position() == j.position()
    seqs = [e["seq"] for e in again.events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    j.close()
    again.close()


def test_journal_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        Journal(tmp_path, synchronous="OFF")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "journal.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(tmp_path / "bad")
    j = Journal(tmp_path / "ok", synchronous="FULL")
    with pytest.raises(ValueError, match="side must be buy/sell"):
        j.new_order("SYN/USDT", "long", "market", 1.0)
    with pytest.raises(ValueError, match="use new_order/transition/fill"):
        j.record("fill")
    with pytest.raises(ValueError, match="kind must be one of"):
        j._append("gossip", None, {})
    other = Journal(tmp_path / "other")
    od = other.new_order("SYN/USDT", "buy", "market", 1.0)
    with pytest.raises(KeyError, match="is not an order of"):
        j.transition(od, OrderEvent.SUBMIT)
    od2 = j.adopt("SYN/USDT", FOREIGN)
    assert (od2.status, od2.intent, od2.exchange_id, j.by_exchange_id("9")) == (OrderStatus.OPEN, "x9", "9", od2)
    with pytest.raises(ValueError, match="in the journal already"):
        j.adopt("SYN/USDT", FOREIGN)
    assert "Journal(" in repr(j) and j.events(od2.client_id)[0]["kind"] == "intent"


ALLOC = textwrap.dedent(
    """
    import sys
    from intraday.journal import Journal
    j = Journal(sys.argv[1], runner="p")
    print("\\n".join(j.new_order("SYN/USDT", "buy", "market", 1.0).client_id for _ in range(int(sys.argv[2]))))
    """
)


def test_client_ids_unique_across_processes_restarts_and_journals(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", ALLOC, str(tmp_path / "s"), "200"], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]  # fmt: skip
    ids = [line for p in procs for line in p.communicate(timeout=120)[0].split()]
    ids += Journal(tmp_path / "s", runner="p").new_order("SYN/USDT", "buy", "market", 1.0).client_id.split()
    ids += Journal(tmp_path / "fresh", runner="p").new_order("SYN/USDT", "buy", "market", 1.0).client_id.split()
    assert len(ids) == 602 and len(set(ids)) == 602  # two processes on one journal, a restart, a new journal
    assert all(CLIENT_ID_RE.fullmatch(i) for i in ids)


WRITER = textwrap.dedent(
    """
    import sys, time
    from intraday.journal import Journal
    from intraday.orders import OrderEvent
    j = Journal(sys.argv[1], runner="w")
    n = 0
    while True:
        od = j.new_order("SYN/USDT", "buy", "market", 1.0)
        j.transition(od, OrderEvent.SUBMIT, sent=time.time())
        n += 1
        print(od.client_id, j.last_seq, flush=True)  # acknowledged to the caller
    """
)


def test_nothing_acknowledged_is_lost_when_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acked = []
    t0 = time.time()
    while len(acked) < 300 and time.time() - t0 < 60:
        acked.append(p.stdout.readline().split())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    j = Journal(tmp_path, runner="w")
    for cid, seq in acked:
        assert j.orders[cid].status == OrderStatus.SUBMITTING and j.last_seq >= int(seq)
    assert len(acked) == 300


def test_risk_reducing_state_and_rate_limit():
    r = Risk(RiskSettings(max_orders_per_minute=2, max_drawdown=0.1))
    t = 1.7e9
    r.set_state(TradingState.REDUCING, "test")
    assert r.check(Intent("buy", 1), 2, 0, 0, 10.0, t) == "reducing only: test"
    assert r.check(Intent("sell", 1), 2, 0, 0, 10.0, t) is None
    r.set_state(TradingState.ACTIVE, "")
    r.note_sent(t)
    r.note_sent(t + 1)
    assert r.check(Intent("buy", 1), 0, 0, 0, 10.0, t + 2) == "max order rate: 2 orders in the last minute"
    assert r.check(Intent("buy", 1), 0, 0, 0, 10.0, t + 70) is None
    r.note_equity(100.0, t)
    r.note_equity(120.0, t + 1)
    assert r.note_equity(107.0, t + 2) == TradingState.HALTED and r.reason == "drawdown 10.83% reached the limit 10.00%"
    assert r.note_equity(50.0, t + 3) is None  # already halted
    assert json.loads(json.dumps(r.to_dict()))["state"] == "HALTED"


# Issue 20: the journal's storage defects. Each test is named after the defect it pins.


def _snap(j: Journal) -> tuple:
    "What a failed write must leave untouched: orders, state, seq, position, live set."
    orders = {k: o.to_dict() for k, o in j.orders.items()}
    return orders, dict(j.state), j.last_seq, j.position(), [o.client_id for o in j.live_orders()]


def _fill_events(d) -> int:
    return sum(e["kind"] == "fill" for e in Journal(d, runner="p").events())


def test_fill_not_atomic_two_writers_apply_a_trade_once(tmp_path):
    a, b = Journal(tmp_path, runner="p"), Journal(tmp_path, runner="p")
    oa = a.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    b._replay()  # b knows the order, not the fill a is about to journal
    ob = b.orders[oa.client_id]
    assert a.fill(oa, "t1", 1.0, 10.0) is True
    assert b.fill(ob, "t1", 1.0, 10.0) is False  # the same trade, reported to a stale writer
    assert (ob.filled, b.position()) == (1.0, 1.0)  # b caught up on a's fill in the transaction
    assert _fill_events(tmp_path) == 1 and Journal(tmp_path, runner="p").position() == 1.0


FILLER = textwrap.dedent(
    """
    import os, sys, time
    from intraday.journal import Journal
    j = Journal(sys.argv[1], runner="p", busy_timeout=30)
    od = j.orders[sys.argv[2]]
    print("ready", flush=True)
    while not os.path.exists(sys.argv[3]):  # both have replayed before either fills: both start stale
        time.sleep(0.005)
    print(sum(j.fill(od, str(i), 0.02, 10.0) for i in range(50)))
    """
)


def test_fill_not_atomic_two_processes_race_on_the_same_trades(tmp_path):
    od = Journal(tmp_path, runner="p").new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", FILLER, str(tmp_path), od.client_id, str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    go.touch()
    applied = [int(p.communicate(timeout=120)[0]) for p in procs]
    j = Journal(tmp_path, runner="p")
    assert sum(applied) == 50 and _fill_events(tmp_path) == 50  # each trade applied by exactly one writer
    assert j.position() == pytest.approx(1.0) and j.orders[od.client_id].status == OrderStatus.FILLED


def test_replay_counts_only_fills_apply_fill_took(tmp_path):
    j = Journal(tmp_path, runner="p")
    od = j.new_order("SYN/USDT", "sell", "market", 1.0, then=OrderEvent.SUBMIT)
    assert j.fill(od, "t1", 1.0, 10.0)
    # an old journal (before the fill was one transaction) may hold a duplicate and an over-filling fill event
    for tid in ("t1", "t2"):
        j.db.execute("INSERT INTO events (ts, kind, client_id, data) VALUES (?, 'fill', ?, ?)",
                     (time.time(), od.client_id, json.dumps({"trade_id": tid, "qty": 1.0, "price": 10.0})))  # fmt: skip
    again = Journal(tmp_path, runner="p")
    assert again.position() == j.position() == -1.0 and again.orders[od.client_id].filled == 1.0
    assert len(again.skipped) == 2 and "applied already" in again.skipped[0] and "refused" in again.skipped[1]


def test_replay_counts_only_fills_a_stale_writer_writes_no_refused_fill(tmp_path):
    a, b = Journal(tmp_path, runner="p"), Journal(tmp_path, runner="p")
    oa = a.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    b._replay()
    ob = b.orders[oa.client_id]
    assert a.fill(oa, "t1", 1.0, 10.0)
    with pytest.raises(OverFill, match="refused"):
        b.fill(ob, "t2", 1.0, 10.0)  # b's stale view would allow it; the journal does not
    assert _fill_events(tmp_path) == 1 and Journal(tmp_path, runner="p").skipped == []


def test_journal_opens_with_quick_check_and_refuses_a_damaged_file(tmp_path):
    j = Journal(tmp_path, runner="p")
    for i in range(300):
        j.new_order("SYN/USDT", "buy", "limit", 1.0, 10.0, then=OrderEvent.SUBMIT, reason=f"order {i} " + "x" * 60)
    j.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    j.close()
    for side in ("-wal", "-shm"):
        (tmp_path / f"journal.sqlite{side}").unlink(missing_ok=True)
    path = tmp_path / "journal.sqlite"
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    middle = len(raw) // page // 2
    raw[middle * page : (middle + 1) * page] = random.Random(7).randbytes(page)
    path.write_bytes(bytes(raw))
    for opener in (lambda: Journal(tmp_path, runner="p"), lambda: Journal.open(tmp_path)):
        with pytest.raises(JournalError, match=f"{path}: cannot open the journal, it is damaged \\(SQLite: .+\\)"):
            opener()


def test_broken_event_row_names_file_seq_and_kind(tmp_path):
    j = Journal(tmp_path, runner="p")
    od = j.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    cur = j.db.execute("INSERT INTO events (ts, kind, client_id, data) VALUES (0, 'fill', ?, '{\"trade_id\": ')",
                       (od.client_id,))  # fmt: skip
    want = f"{tmp_path / 'journal.sqlite'}: event seq {cur.lastrowid} \\(fill, order {od.client_id}\\) is not readable"
    with pytest.raises(JournalError, match=want):
        Journal(tmp_path, runner="p")
    with pytest.raises(JournalError, match=want):
        j.events()
    with pytest.raises(JournalError, match=want):  # a live journal meets it when catching up before a write
        j.record("note", msg="x")


def _every_write_fails(j: Journal, od, match: str) -> None:
    "Each write method raises a StorageError naming the journal file and `match`, and leaves memory as it was."
    before = _snap(j)
    counter = j._meta()["counter"]
    writes = [
        lambda: j.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT, reason="r" * 300),
        lambda: j.transition(od, OrderEvent.CANCEL_REQUEST, "x" * 300),
        lambda: j.fill(od, "t9", 0.5, 10.0, 0.01),
        lambda: j.record("state", baseline=5.0, why="y" * 300),
        lambda: j.adopt("SYN/USDT", FOREIGN),  # fmt: skip
    ]
    for write in writes:
        with pytest.raises(StorageError, match=f"{j.path}: cannot write the journal .*{match}"):
            write()
        assert _snap(j) == before and j._meta()["counter"] == counter
    assert issubclass(StorageError, JournalError)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    "A 192 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_storage_errors_are_typed_when_the_disk_is_full(tiny_tmpfs):
    j = Journal(tiny_tmpfs, runner="p")
    od = j.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    j.transition(od, OrderEvent.ACCEPT)
    with pytest.raises(StorageError, match="database or disk is full"):
        for _ in range(10_000):
            j.record("note", blob="n" * 500)
    _every_write_fails(j, od, "database or disk is full")
    j.close()
    again = Journal(tiny_tmpfs, runner="p")  # what was acknowledged is there, nothing half-written
    assert again.orders[od.client_id].status == OrderStatus.OPEN and again.position() == 0.0
    again.close()


def test_storage_errors_are_typed_when_sqlite_max_page_count_is_reached(tmp_path):
    j = Journal(tmp_path, runner="p")
    od = j.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    j.transition(od, OrderEvent.ACCEPT)
    pages = j.db.execute("PRAGMA page_count").fetchone()[0]
    j.db.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL for real once the file would grow
    with pytest.raises(StorageError, match="database or disk is full"):
        for _ in range(10_000):
            j.record("note")
    _every_write_fails(j, od, "database or disk is full")


def test_storage_errors_are_typed_when_the_journal_is_read_only(tmp_path):
    j = Journal(tmp_path, runner="p")
    od = j.new_order("SYN/USDT", "buy", "market", 1.0, then=OrderEvent.SUBMIT)
    j.transition(od, OrderEvent.ACCEPT)
    j.db.execute("PRAGMA query_only = ON")  # root ignores file modes: make the connection itself read-only
    _every_write_fails(j, od, "attempt to write a readonly database")


def test_storage_errors_are_typed_a_busy_journal_waits_then_fails(tmp_path):
    j = Journal(tmp_path, runner="p", busy_timeout=5)
    other = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a moment
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    assert j.record("note", msg="waited") > 0  # waited for the lock rather than failing at once
    quick = Journal(tmp_path, runner="p", busy_timeout=0.05)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StorageError, match="database is locked"):
        quick.record("note", msg="gives up")
    other.execute("ROLLBACK")
    assert [e["data"].get("msg") for e in quick.events()] == ["waited"]


@pytest.mark.parametrize("equity", [0.0, -5.0, float("nan")])
def test_risk_note_equity_zero_halts_or_passes_without_dividing(equity):
    "Issue 20: Risk().note_equity(0.0) raised ZeroDivisionError with the limits off."
    t = 1.7e9
    off = Risk()
    assert off.note_equity(equity, t) is None and off.state == TradingState.ACTIVE
    assert off.note_equity(100.0, t + 1) is None and (off.day_start, off.peak) == (100.0, 100.0)
    for limits in ({"daily_loss_limit": 0.05}, {"max_drawdown": 0.1}):
        r = Risk(RiskSettings(**limits))
        assert r.note_equity(equity, t) == TradingState.HALTED and "is not positive" in r.reason
        r = Risk(RiskSettings(**limits))
        r.note_equity(100.0, t)  # a positive start, then the account is emptied
        assert r.note_equity(equity, t + 1) == TradingState.HALTED and "loss limits cannot be checked" in r.reason


def test_opening_waits_for_a_writer_mid_upgrade(tmp_path):
    # SQLite answers "database is locked" at once (no busy wait) to a reader upgrading while another connection
    # holds the write lock of a rollback-mode file: what a second process opening a new journal meets (seen in CI)
    holder = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE held(a)")
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, holder.execute, ("COMMIT",)).start()
    assert Journal(tmp_path, runner="p").new_order("SYN/USDT", "buy", "market", 1.0).client_id
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    other = sqlite3.connect(fresh / "journal.sqlite", isolation_level=None)
    other.execute("CREATE TABLE held(a)")
    other.execute("BEGIN IMMEDIATE")  # held past the opener's patience: one clear error, not a hang
    with pytest.raises(JournalError, match="cannot open the journal .database is locked"):
        Journal(fresh, runner="p", busy_timeout=0.2)
    other.execute("COMMIT")
