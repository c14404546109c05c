"""Issue 20, the live runner unattended: each test is named after a defect seen against the paper venue with a real
market's precision (lot 0.001, minimum notional 5), through the real ccxt client on 127.0.0.1."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from stable_baselines3 import PPO

from intraday.binance import MarketSpec, connect, serve
from intraday.bundle import PolicyBundle, export_bundle
from intraday.cli import loopback, main
from intraday.config import LiveSettings, RiskSettings, load_settings
from intraday.control import ControlServer
from intraday.data import synth_market, write_bars
from intraday.env import build_envs
from intraday.journal import Journal
from intraday.live import AccountError, BarFeed, LiveRunner
from intraday.orders import OrderEvent
from intraday.risk import Intent, Risk, TradingState
from intraday.router import Router, ledger_audit
from intraday.venue import Venue

BARS = synth_market(days=8, seed=11)
REAL = MarketSpec()  # Binance-like rules: lot 0.001, minimum notional 5 (the tests of test_live use 1e-8)
KEY, SECRET = "unattended-key", "unattended-secret"


def fixed_bundle(path: Path, positions: str, pick: int) -> Path:
    "A bundle whose policy always picks action `pick` of `positions` (an untrained PPO with its output forced)."
    spot = all(0 <= float(w) <= 1 for w in positions.split(","))  # a long-only bundle is made for the spot venue
    s = load_settings(
        environ={}, env={"positions": positions, "episode_len": 600, "account": "spot" if spot else "margin"}
    )
    sp = build_envs(s, BARS)
    model = PPO("MlpPolicy", sp.make_env("train"), n_steps=64, batch_size=64, seed=0, device="cpu")
    net = model.policy.action_net
    net.weight.data.zero_()
    net.bias.data[:] = -10.0
    net.bias.data[pick] = 10.0
    return export_bundle(model, sp.pipeline, sp.fill_model, sp.env, path)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unattended")
    return {
        "half": fixed_bundle(tmp / "half", "0,0.5", 1),  # holds 0.5 of equity for ever
        "full": fixed_bundle(tmp / "full", "0,1", 1),  # holds the whole equity
        "short": fixed_bundle(tmp / "short", "-1,0,1", 0),  # wants short: a spot account cannot
    }


def venue_for(bundle: Path, **kw) -> Venue:
    b = PolicyBundle.load(bundle)
    start = b.pipeline().warmup + 50
    return Venue(BARS, start=start, admin=True, keys={KEY: SECRET}, fill_model=b.fill_model(), spec=REAL,
                 balances={"USDT": 10_000.0, "SYN": 0.0}, **kw)  # fmt: skip


def router_for(url: str, state: Path, ex=None, **live) -> Router:
    s = LiveSettings(runner="ua", unknown_grace_s=live.pop("unknown_grace_s", 1.0), retry_base_s=0.02, **live)
    return Router(ex or connect(url, KEY, SECRET, pro=True), Journal(state, runner="ua"), "SYN/USDT",
                  Risk(RiskSettings()), s)  # fmt: skip


async def runner_for(url: str, state: Path, bundle: Path, **live) -> LiveRunner:
    router = router_for(url, state, **live)
    await router.start()
    feed = BarFeed(router.ex, "SYN/USDT", "1m", stale_s=3.0, closed_only=True)
    runner = LiveRunner(router, feed, bundle, reconcile_every_s=live.get("reconcile_every_s"))
    await runner.start()
    return runner


async def close(r: LiveRunner) -> None:
    await r.feed.close()
    await r.router.ex.close()


async def bars(r: LiveRunner, venue: Venue, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        venue.step()
        out.append(await r.on_bar(await r.feed.next()))
    return out


def test_held_target_below_the_market_precision_is_no_order_not_a_crash(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"])
        ds = await bars(r, venue, 40)
        a = ledger_audit(venue.ledger(), r.router.journal, "SYN")
        await close(r)
        return r, ds, a

    r, ds, audit = asyncio.run(session())
    stop()
    sent = [d for d in ds if d["client_id"]]
    held = [d for d in ds if str(d["status"]).startswith("held")]
    assert len(sent) == 1 and sent[0]["status"] in ("OPEN", "FILLED"), [d["status"] for d in ds][:5]
    assert len(held) == 39 and all(d["order_qty"] == 0 for d in held)  # 39 bars of a held position, no order
    assert r.router.journal.orders and all(o.status.value == "FILLED" for o in r.router.journal.orders.values())
    assert (audit["duplicates"], audit["lost"], audit["mismatches"]) == (0, 0, 0)
    assert r.pnl.qty == pytest.approx(venue.ledger()["balances"]["SYN"]["total"])


def test_router_denies_a_quantity_below_the_amount_precision(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        router = router_for(url, tmp_path / "state")
        await router.start()
        router.last_price = venue.last
        tiny = await router.submit(Intent("buy", 0.0004, tag="bar 1"))  # ccxt raises InvalidOrder on it
        small = await router.submit(Intent("buy", 0.001))  # one lot, but a notional far below 5 USDT
        await router.ex.close()
        return router, tiny, small

    router, tiny, small = asyncio.run(session())
    stop()
    assert tiny.status.value == "DENIED" and "rounds to 0" in tiny.reason
    assert small.status.value == "DENIED" and "below the market minimum" in small.reason
    first = router.journal.events(tiny.client_id)[1]["data"]
    assert first["tag"] == "bar 1"  # Intent.tag is journaled with the order's first event


def test_garbled_exchange_info_does_not_poison_later_starts(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)
    venue.fault("GET /api/v3/exchangeInfo", "malformed", 3)

    async def session():
        router = router_for(url, tmp_path / "state")
        await router.start()  # garbled replies are retried with markets reloaded
        second = router_for(url, tmp_path / "state2", ex=router.ex)  # the same ccxt client: its markets must reload
        venue.fault("GET /api/v3/exchangeInfo", "malformed", 2)
        await second.start()
        await router.ex.close()
        return router, second

    router, second = asyncio.run(session())
    stop()
    assert router.ready and second.ready and second.market["symbol"] == "SYN/USDT"


def test_an_invisible_fill_within_the_grace_window_does_not_halt_reconciliation(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        router = router_for(url, tmp_path / "state", unknown_grace_s=4.0)
        await router.start()
        router.last_price = venue.last
        venue.fault("POST /api/v3/order", "invisible", 1, invisible_ms=2500)
        od = await router.submit(Intent("buy", 0.5))
        venue.step()  # it fills at the venue; the venue hides it from our reads for 2.5 s
        early = await router.reconcile()
        await asyncio.sleep(4.2)
        late = await router.reconcile()
        await router.ex.close()
        return router, od, early, late

    router, od, early, late = asyncio.run(session())
    stop()
    assert not early["mismatch"] and early["deferred"] == [od.client_id]
    assert router.risk.state == TradingState.ACTIVE
    assert not late["mismatch"] and not late["deferred"] and late["position"] == pytest.approx(0.5)


def test_a_short_bundle_on_a_spot_account_is_refused_at_start_or_traded_flat(bundles, tmp_path):
    venue = venue_for(bundles["short"])
    url, stop = serve(venue)

    async def session(shorts):
        router = router_for(url, tmp_path / shorts, shorts=shorts)
        await router.start()
        feed = BarFeed(router.ex, "SYN/USDT", "1m", closed_only=True)
        try:
            r = LiveRunner(router, feed, bundles["short"])
            await r.start()
            ds = await bars(r, venue, 3)
            return ds
        finally:
            await router.ex.close()

    with pytest.raises(AccountError, match=r"short positions \[-1.0\] but the account is spot.*SHORTS=flat"):
        asyncio.run(session("refuse"))
    ds = asyncio.run(session("flat"))
    stop()
    assert [d["target_weight"] for d in ds] == [0.0, 0.0, 0.0] and not any(d["client_id"] for d in ds)


def test_a_full_weight_buy_leaves_room_for_fees_and_the_move_to_the_fill(bundles, tmp_path):
    venue = venue_for(bundles["full"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["full"])
        ds = await bars(r, venue, 5)
        await close(r)
        return r, ds

    r, ds = asyncio.run(session())
    stop()
    orders = list(r.router.journal.orders.values())
    assert orders and orders[0].status.value == "FILLED", [(o.status, o.reason) for o in orders]
    assert not [o for o in orders if o.status.value in ("REJECTED", "DENIED")]
    cash = venue.ledger()["balances"]["USDT"]["total"]
    assert 0 <= cash < 0.02 * 10_000  # invested but for the room: 100 bps + the fee
    assert r.router.risk.state == TradingState.ACTIVE


def test_a_full_journal_halts_with_the_file_named_and_keeps_serving(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"])
        await bars(r, venue, 2)  # bought and holding
        db = r.router.journal.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full", for real
        full = None
        for _ in range(2000):  # events until the last page is used up
            try:
                r.router.journal.record("note", None, pad="x" * 200)
            except Exception as e:
                full = e
                break
        assert full is not None and "full" in str(full)
        r.target, r.lastw = 0.0, 0.5  # the next bar sells: an order to journal on a full disk
        task = asyncio.ensure_future(r.run(bars=3))
        for _ in range(3):
            await asyncio.sleep(0.3)
            venue.step()
        final = await asyncio.wait_for(task, 20)
        db.execute("PRAGMA max_page_count = 1073741823")  # the disk is freed
        resumed = await r.resume("disk freed")
        await close(r)
        return r, final, resumed

    r, final, resumed = asyncio.run(session())
    stop()
    assert final["trading_state"] == "HALTED" and final["fault"] is not None
    assert "storage fault" in final["reason"] and str(tmp_path / "state") in final["reason"]
    assert "full" in final["reason"] and final["position"] > 0 and final["halt"]["holding"] > 0
    assert "intraday live resume" in final["halt"]["resume"] and final["ready"] is False
    assert resumed["trading_state"] == "ACTIVE" and resumed["fault"] is None


def test_reconciliation_runs_without_bars_and_finds_a_venue_that_lost_our_books(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"], reconcile_every_s=0.5)
        await bars(r, venue, 2)
        venue.balances["SYN"] = [0.0, 0.0]  # the venue restarted with a fresh ledger: our position is gone
        t0 = time.time()
        task = asyncio.ensure_future(r.run(duration=3.0))  # no bar arrives in this time
        while r.router.risk.state != TradingState.HALTED and time.time() - t0 < 3.0:
            await asyncio.sleep(0.05)
        found = time.time() - t0
        await task
        await close(r)
        return r, found

    r, found = asyncio.run(session())
    stop()
    assert found < 1.5, found
    assert "position mismatch: journal" in r.router.risk.reason and "venue 0 SYN" in r.router.risk.reason
    assert r.readiness()["reconciled"] is False


def test_the_feed_halts_when_the_venue_clock_moved_backwards(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"])
        await bars(r, venue, 2)
        venue.cursor -= 10  # a restarted venue, re-based behind us
        venue.step()
        final = await r.run(bars=1, duration=3)
        await close(r)
        return final

    final = asyncio.run(session())
    stop()
    assert final["trading_state"] == "HALTED" and "clock moved backwards" in final["reason"]


def test_halted_bars_add_no_denied_orders_and_pnl_is_rebuilt_at_restart(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"])
        await bars(r, venue, 2)
        fees = r.pnl.fees
        r.router.set_state(TradingState.HALTED, "operator")
        r.target, r.lastw = 0.0, 0.5  # something to send (a sale), were it not halted
        ds = await bars(r, venue, 5)
        n = len(r.router.journal.orders)
        await close(r)
        again = await runner_for(url, tmp_path / "state", bundles["half"])  # a restart
        await close(again)
        return ds, n, fees, again

    ds, n, fees, again = asyncio.run(session())
    stop()
    assert all(d["status"].startswith("halted: operator") for d in ds) and n == 1
    assert fees > 0 and again.pnl.fees == pytest.approx(fees) and again.pnl.avg > 0


def test_kill_answers_at_once_while_cancels_hang(bundles, tmp_path):
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"], timeout_ms=1000, retry_attempts=2)
        r.router.last_price = venue.last
        od = await r.router.submit(Intent("buy", 1.0, "limit", round(venue.last * 0.98, 2)))
        assert od.status.value == "OPEN", od.reason
        venue.fault("DELETE /api/v3/order", "cancel_timeout", 3, cancel_timeout_ms=1500)
        async with ControlServer(r.monitor, state=r.state, kill=r.kill, resume=r.resume,
                                 token="tok-unattended") as server:  # fmt: skip

            def post(path):
                return urllib.request.Request(server.url + path, method="POST",
                                              headers={"Authorization": "Bearer tok-unattended"})  # fmt: skip

            t0 = time.time()
            status, body = await asyncio.to_thread(lambda: _open(post("/kill")))
            answered = time.time() - t0
            running = r.state()["kill"]["running"]
            early = await asyncio.to_thread(lambda: _open(post("/resume")))  # while the cancels still hang
            await asyncio.wait_for(r.router.kill_task, 30)
            late = await asyncio.to_thread(lambda: _open(post("/resume")))
        await close(r)
        return od, status, json.loads(body), answered, running, r, early, late

    od, status, body, answered, running, r, early, late = asyncio.run(session())
    stop()
    assert status == 202 and answered < 1.0 and body["result"]["trading_state"] == "HALTED"
    assert running and r.state()["kill"]["running"] is False
    assert od.status.value == "CANCELED"  # the cancel ran to its end after the answer
    assert early[0] == 409 and "still running" in json.loads(early[1])["error"]  # refused, not a 500 after 5 s
    assert late[0] == 200 and json.loads(late[1])["result"]["trading_state"] == "ACTIVE"


def _open(req):
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:  # 4xx/5xx: the status and the body, as for a success
        return e.code, e.read().decode()


def test_url_outside_loopback_needs_live(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("INTRADAY_API_KEY", KEY)
    monkeypatch.setenv("INTRADAY_API_SECRET", SECRET)
    assert loopback("http://127.0.0.1:8765") and loopback("http://127.1.2.3") and loopback("http://localhost:1")
    assert not loopback("https://api.binance.com") and not loopback("http://10.0.0.1:8765")
    code = main(["live", "--bundle", str(tmp_path), "--url", "https://api.binance.com", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not on this machine" in err and "--live" in err


def test_live_status_says_why_halted_since_when_holding_what_and_how_to_resume(capsys, tmp_path):
    j = Journal(tmp_path / "state")
    j.record("state", risk={"state": "ACTIVE", "reason": ""})
    j.close()
    assert main(["live", "kill", "--state-dir", str(tmp_path / "state"), "--reason", "desk"]) == 0
    capsys.readouterr()
    assert main(["live", "status", "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "trading state  HALTED (kill file: desk)" in out and "kill file      present" in out
    assert "intraday live resume --state-dir" in out


def test_live_kill_on_a_state_dir_that_cannot_be_written_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["live", "kill", "--state-dir", str(blocker / "state")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("intraday: cannot write the kill file") and err.count("\n") == 1


def test_the_readme_paper_session_trades_within_a_minute_and_ends_with_a_summary(bundles, tmp_path):
    """The README's paper session (venue at 60x with history, runner) with a fixed long-only bundle, then SIGTERM.
    The README's loops as written run in tests/test_readme.py; this one asserts what a session must do."""
    env = {**os.environ, "INTRADAY_API_KEY": KEY, "INTRADAY_API_SECRET": SECRET, "INTRADAY_CONTROL_TOKEN": "tok-1"}
    data = tmp_path / "market.parquet"
    write_bars(synth_market(days=3, seed=5), data, {"symbol": "SYN/USDT"})
    exe = [str(Path(sys.executable).parent / "intraday")]
    serve_args = ["venue", "serve", "--data", str(data), "--speed", "60", "--history", "2", "--port", "0"]
    venue = subprocess.Popen([*exe, *serve_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = venue.stdout.readline()
        url = line.split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line
        t0 = time.time()
        runner = subprocess.Popen([*exe, "live", "--bundle", str(bundles["half"]), "--url", url, "--duration", "600",
                                   "--metrics-port", "0", "--state-dir", str(tmp_path / "state")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        ex = connect(url, KEY, SECRET)
        first = None
        while time.time() - t0 < 60 and first is None:
            time.sleep(1.0)
            trades = ex.fetch_my_trades("SYN/USDT")
            first = time.time() - t0 if trades else None
        time.sleep(20)  # 20 more bars of a held position
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=60)
        orders = ex.fetch_orders("SYN/USDT")
    finally:
        venue.terminate()
        venue.communicate(timeout=30)
    print(f"first fill {first} s after the runner started; {len(orders)} order(s)")
    assert first is not None and first < 60, err[-2000:]
    assert runner.returncode == 0 and "Traceback" not in err
    assert len(orders) == 1  # one buy, then the position is held: no order below the market minimum
    summary = json.loads(out)
    assert summary["position"] > 0 and summary["decisions"] >= 20
    logs = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    messages = [x["record"]["message"] for x in logs]
    for key in ("warm-up done", "reconciled", "order buy", "fill buy", "session ended (signal SIGTERM)"):
        assert any(m.startswith(key) for m in messages), (key, messages[:20])


def test_a_backlog_of_bars_after_a_stall_is_caught_up_with_one_decision(bundles, tmp_path):
    "A stalled loop used to decide every queued bar at its old close: orders sized on stale prices, rejected."
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"])
        venue.step(4)  # four bars close while the runner is busy elsewhere
        got = [await asyncio.wait_for(r.feed.next(), 10) for _ in range(4)]
        r.feed.ready[:0] = got[1:]  # as the feed holds them when the loop comes back
        ds = [await r.on_bar(got[0])] + [await r.on_bar(await r.feed.next()) for _ in range(3)]
        await close(r)
        return r, ds

    r, ds = asyncio.run(session())
    stop()
    assert ds[:3] == [None, None, None] and ds[3]["client_id"] is not None and r.backlog == 3
    assert len(r.router.journal.orders) == 1 and r.state()["backlog_bars"] == 3


def test_a_hot_swap_that_keeps_the_old_file_times_is_seen(bundles, tmp_path):
    "The swap was found by the manifest's mtime: a copy that keeps file times (cp -p, rsync -t) went unseen."
    live = tmp_path / "live"
    shutil.copytree(bundles["half"], live)
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", live)
        old = {f.name: f.stat() for f in live.iterdir()}
        for f in bundles["full"].iterdir():  # the whole signed bundle, every file keeping the old one's times
            shutil.copy2(f, live / f.name)
            os.utime(live / f.name, ns=(old[f.name].st_atime_ns, old[f.name].st_mtime_ns))  # as `cp -p` of older files
        swapped = await r.check_bundle()
        await close(r)
        return r, swapped

    r, swapped = asyncio.run(session())
    stop()
    assert swapped is True and r.swaps["accepted"] == 1
    assert r.bundle.manifest["policy_sha256"] == PolicyBundle.load(bundles["full"]).manifest["policy_sha256"]


def test_a_kill_and_a_bar_resolving_one_order_in_doubt_journal_its_outcome_once(bundles, tmp_path):
    "The soak's IllegalTransition: the kill's cancel and the bar's send both resolved one UNKNOWN order, both REJECTed."
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        router = router_for(url, tmp_path / "state")
        await router.start()
        j = router.journal
        od = j.new_order("SYN/USDT", "sell", "market", 1.0, then=OrderEvent.SUBMIT, sent=time.time())
        j.transition(od, OrderEvent.UNKNOWN, "a lost request")  # never reached the venue: absent after the grace
        got = await asyncio.gather(router.resolve(od), router.cancel(od), router.sync(od))
        await router.ex.close()
        return od, got, j.events(od.client_id)

    od, got, events = asyncio.run(session())
    stop()
    assert all(o.status.value == "REJECTED" for o in got)
    assert [e["data"]["event"] for e in events if e["kind"] == "transition"] == ["SUBMIT", "UNKNOWN", "REJECT"]


def test_a_runner_always_sending_cannot_hide_a_lost_ledger_behind_the_grace_window(bundles, tmp_path):
    "The full soak: a flipping runner always had an order within the grace window, so a lost ledger was deferred."
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        router = router_for(url, tmp_path / "state", unknown_grace_s=1.0)
        await router.start()
        router.last_price = venue.last
        od = await router.submit(Intent("buy", 0.5))
        venue.step()
        await router.sync(od)
        venue.balances["SYN"] = [0.0, 0.0]  # the venue lost our position
        reps = []
        for _ in range(6):  # a fresh order before every pass: one is always within the window
            await router.submit(Intent("buy", 1.0, "limit", round(venue.last * 0.9, 2)))
            reps.append(await router.reconcile())
            await asyncio.sleep(0.6)
        await router.ex.close()
        return router, reps

    router, reps = asyncio.run(session())
    stop()
    assert reps[0]["deferred"] and not reps[0]["mismatch"]
    assert reps[-1]["mismatch"] and router.risk.state == TradingState.HALTED
    assert "position mismatch: journal 0.5 SYN, venue 0 SYN" in router.risk.reason


def test_slow_venue_creates_are_not_resent_stale_and_the_bar_is_not_blocked_for_long(bundles, tmp_path):
    """Creates slowed past the client timeout: the intent is sent once per bar (a stale decision is not re-sent),
    the bar ends within about one timeout, and no order is doubled."""
    slow = {"endpoints": {"POST /api/v3/order": {"latency": {"fixed": 1500}}}, "seed": 1}
    venue = venue_for(bundles["full"], faults=slow)
    url, stop = serve(venue)

    async def session():
        r = await runner_for(
            url, tmp_path / "state", bundles["full"], timeout_ms=1000, unknown_grace_s=1.0, resend_within_s=0.5
        )  # a create that timed out (1 s) is too old to re-send
        venue.step()
        bar = await r.feed.next()  # a bar stepped right after start may come by polling (stale_s): not timed
        t0 = time.time()
        ds = [await r.on_bar(bar)]
        took = time.time() - t0
        await asyncio.sleep(1.0)  # the venue executes the slowed create after the client gave up
        for _ in range(3):
            ds += await bars(r, venue, 1)
        await r.reconcile()
        a = ledger_audit(venue.ledger(), r.router.journal, "SYN")
        st = r.state()
        await close(r)
        return r, ds, a, took, st

    r, ds, audit, took, st = asyncio.run(session())
    stop()
    creates = [e for e in venue.injector.log if e["method"] == "POST" and e["path"] == "/api/v3/order"]
    print(f"slow venue: first bar {took:.2f} s, creates {len(creates)}, statuses {[d['status'] for d in ds]}, "
          f"state {st['trading_state']}, audit {audit}")  # fmt: skip
    assert len(creates) == len(ds) == 4  # one send per bar: the timed-out create is not re-sent on a stale price
    assert took < 2.0  # one timeout (1 s) and its resolution, not three of them
    assert all(d["status"] == "REJECTED" for d in ds) and st["trading_state"] == "ACTIVE"  # absent, still trading
    assert (audit["duplicates"], audit["lost"], audit["mismatches"]) == (0, 0, 0)
    assert r.pnl.qty == pytest.approx(venue.ledger()["balances"]["SYN"]["total"])


def test_a_bundle_whose_targets_are_below_the_market_minimum_is_refused_at_start(bundles, tmp_path):
    b = PolicyBundle.load(bundles["half"])
    venue = Venue(
        BARS,
        start=b.pipeline().warmup + 50,
        admin=True,
        keys={KEY: SECRET},
        fill_model=b.fill_model(),
        spec=REAL,
        balances={"USDT": 8.0, "SYN": 0.0},
    )  # half of 8 USDT is below the 5 USDT notional
    url, stop = serve(venue)

    async def session():
        try:
            with pytest.raises(
                AccountError, match=r"weight 0.5 of equity 8.00.*below the market minimum 5.*at least 10"
            ):
                await runner_for(url, tmp_path / "state", bundles["half"])
        finally:
            await asyncio.sleep(0)

    asyncio.run(session())
    stop()


def test_orders_name_their_model_and_the_state_says_how_far_the_features_drifted(bundles, tmp_path):
    "Issue 22 (drift) and 21 (who decided): /state's drift reading, and every order tagged with its bundle's hash."
    venue = venue_for(bundles["half"])
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", bundles["half"])
        await bars(r, venue, 3)
        st = r.state()
        await close(r)
        return r, st

    r, st = asyncio.run(session())
    stop()
    sha = PolicyBundle.load(bundles["half"]).manifest["policy_sha256"][:12]
    tags = [e["data"].get("tag") for e in r.router.journal.events(kind="transition") if e["data"].get("tag")]
    assert tags and all(t.endswith(f" model {sha}") and t.startswith("bar ") for t in tags)
    d = st["drift"]
    assert d["rows"] >= 240 and d["level"] in ("stable", "moderate", "significant") and d["feature"], d  # warmed
    assert "ret_1" in r.drift.names and not {"dow_sin", "tod_cos", "tod_sin2"} & set(r.drift.names)  # no clock features
