"""Trading a basket (issue 23, item 6). The decision times: every symbol's bars from one ccxt.pro client on the paper
venue for several symbols; a symbol whose feed stalls is stated missing after the grace (the others go on), and its
bars that close later come as late bars, never decided on. The runner: a 3-symbol paper session is the portfolio
backtest fill for fill; reconciliation finds a mismatch in the second asset and halts only it (the cash, all); a
symbol without its bar is held while the others trade; `intraday live run` trades a basket bundle, and an operator
reads its metrics by symbol, kills it with `live kill`, reads `live status` and resumes it with `live resume`."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from intraday.basket import build_basket_envs
from intraday.basket_bundle import BundleWeights, export_basket_bundle
from intraday.basket_live import BasketFeed, BasketRunner, Slice
from intraday.binance import MarketSpec, connect, serve
from intraday.bundle import PolicyBundle
from intraday.config import LiveSettings, RiskSettings, load_settings
from intraday.dashboard import live_rows
from intraday.exchange import Exchange
from intraday.fills import FillModel
from intraday.journal import Journal
from intraday.live import BarFeed
from intraday.panel import Basket, make_panel, write_panel
from intraday.portfolio import PortfolioBacktester
from intraday.risk import Risk, TradingState
from intraday.router import Router

START = 300
PANEL = Basket("rotation", alpha=0.1).generate(days=1, seed=5)
SYMS = PANEL.symbols


def ms(i: int) -> int:
    return int(PANEL.index[i].value // 10**6)


async def _next(feed: BasketFeed, step, settle: float = 0.3):
    "Ask for the next slice, let the subscriptions settle, close a bar (`step`), return the slice."
    nxt = asyncio.ensure_future(feed.next())
    await asyncio.sleep(settle)
    step()
    return await asyncio.wait_for(nxt, 15)


def test_every_symbols_bar_in_one_slice_from_one_client():
    ex = Exchange(PANEL, start=START, keys={"k": "s"})
    url, stop = serve(ex)

    async def main():
        client = connect(url, "k", "s", pro=True)
        try:
            feed = BasketFeed(client, SYMS, closed_only=True)
            hist = await feed.history(10)
            slices = [await _next(feed, ex.step) for _ in range(3)]
            await feed.close()
            return hist, slices
        finally:
            await client.close()

    try:
        hist, slices = asyncio.run(main())
    finally:
        stop()
    assert all([b.ts for b in v] == [ms(i) for i in range(START - 9, START + 1)] for v in hist.values())
    assert [s.ts for s in slices] == [ms(START + k) for k in (1, 2, 3)]
    assert all(s.missing == [] and s.late == {} for s in slices)
    for k, s in enumerate(slices, 1):
        assert [b.close for b in s.bars.values()] == [round(x, 8) for x in PANEL.field("close").iloc[START + k]]


def test_a_stalled_symbol_is_missing_after_the_grace_and_its_late_bars_are_never_decided_on():
    "CCC's bars come from a second venue whose clock stops: a real stall, the other symbols' bars go on."
    live, frozen = Exchange(PANEL, start=START, keys={"k": "s"}), Exchange(PANEL, start=START, keys={"k": "s"})
    (url, stop), (url2, stop2) = serve(live), serve(frozen)

    async def main():
        a, b = connect(url, "k", "s", pro=True), connect(url2, "k", "s", pro=True)
        try:
            feeds = {s: BarFeed(a, s, closed_only=True, stale_s=60) for s in SYMS[:2]}
            feeds[SYMS[2]] = BarFeed(b, SYMS[2], closed_only=True, stale_s=60)
            feed = BasketFeed(None, SYMS, grace_s=1.0, feeds=feeds)
            await feed.history(5)
            t0 = time.time()
            stalled = [await _next(feed, live.step) for _ in range(2)]
            waited = time.time() - t0
            frozen.step(2)  # CCC's two bars close now, after their slices went out
            await asyncio.sleep(0.5)
            after = await _next(feed, lambda: (live.step(), frozen.step()))
            await feed.close()
            return stalled, waited, after, dict(feed.missed)
        finally:
            await a.close()
            await b.close()

    try:
        stalled, waited, after, missed = asyncio.run(main())
    finally:
        stop()
        stop2()
    assert [s.missing for s in stalled] == [[SYMS[2]], [SYMS[2]]]
    assert all(s.bars[SYMS[0]] is not None and s.bars[SYMS[1]] is not None for s in stalled)
    assert waited >= 2 * 1.0  # each stalled slice waited out its grace
    assert missed == {SYMS[0]: 0, SYMS[1]: 0, SYMS[2]: 2}
    assert after.ts == ms(START + 3) and after.missing == []
    assert [b.ts for b in after.late[SYMS[2]]] == [ms(START + 1), ms(START + 2)]  # features only, in order


# the basket runner -------------------------------------------------------------------------------------------


RP = Basket("rotation", alpha=0.1).generate(days=6, seed=4)
RP = make_panel({s: b.round(8) for s, b in RP.bars.items()})  # the venue's 8 decimals, for the backtest too
FINE = {s: MarketSpec(symbol=s, step_size=1e-8, min_qty=1e-8, min_notional=1e-8, tick_size=1e-8, min_price=1e-8)
        for s in RP.symbols}  # fmt: skip


@pytest.fixture(scope="module")
def basket_bundle(tmp_path_factory):
    torch.set_num_threads(1)
    s = load_settings(environ={}, env={"episode_len": 240, "positions": [0.0, 1.0], "account": "spot"})
    sp = build_basket_envs(s, RP)
    model = PPO("MlpPolicy", sp.make_vec_env("train", 4, seed=0), n_steps=64, batch_size=64, seed=0, device="cpu")
    model.learn(256)
    return export_basket_bundle(model, sp, tmp_path_factory.mktemp("bk") / "basket")  # the workbench key


def _session(bundle_path, state_dir, bars, hook=None):
    "A paper session of `bars` bars on the exchange; (exchange, runner, reconciliation, history length, start)."
    b = PolicyBundle.load(bundle_path, trust=None)
    fms = dict(zip(RP.symbols, [FillModel(**f) for f in b.manifest["basket"]["fill_models"]]))
    n_hist = max(b.pipeline().warmup, 240) + 1
    start = n_hist + 5
    ex = Exchange(RP, start=start, keys={"k": "s"}, specs=FINE, fill_models=fms)
    url, stop = serve(ex)

    async def main():
        client = connect(url, "k", "s", pro=True)
        try:
            live = LiveSettings(runner="bk", retry_base_s=0.02, unknown_grace_s=1.0)
            routers = {s: Router(client, Journal(state_dir / s.replace("/", "-"), runner=f"bk-{s[:3]}"), s,
                                 Risk(RiskSettings()), live) for s in RP.symbols}  # fmt: skip
            feed = BasketFeed(client, RP.symbols, closed_only=True)
            runner = BasketRunner(routers, feed, bundle_path, trust=None)
            await runner.start()
            for k in range(bars):
                sl = await _next(feed, ex.step, settle=0.05)
                await runner.on_slice(hook(k, sl, runner) if hook else sl)
            ex.step()  # the bar the last decision's orders fill in
            for r in routers.values():
                for od in list(r.journal.live_orders()):
                    await r.sync(od)
            rep = await runner.reconcile()
            await feed.close()
            return runner, rep
        finally:
            await client.close()

    try:
        runner, rep = asyncio.run(main())
    finally:
        stop()
    return ex, runner, rep, n_hist, start, fms, b


def test_a_three_symbol_paper_session_is_the_portfolio_backtest_fill_for_fill(basket_bundle, tmp_path):
    k = 60
    ex, runner, rep, n_hist, start, fms, b = _session(basket_bundle, tmp_path, k)
    assert [rep[s]["mismatch"] for s in RP.symbols] + [rep["cash"]["mismatch"]] == [False] * 4
    sub = make_panel({s: RP.bars[s].iloc[start - n_hist + 1 : start + k + 2] for s in RP.symbols})
    res = PortfolioBacktester(fms, b.env_settings(), RiskSettings(), b.pipeline(), (60, 240)).run(
        sub, BundleWeights(b, RP.symbols), start=n_hist, end=n_hist + k + 1
    )
    trades = sorted((t["time"], t["symbol"], t["qty"] * (1 if t["isBuyer"] else -1), t["price"])
                    for t in ex.ledger()["trades"])  # fmt: skip
    f = res.fills
    want = sorted((int(ts.value // 10**6), sym.replace("/", ""), q, px)
                  for ts, sym, q, px in zip(f.index, f.symbol, f.qty, f.price))  # fmt: skip
    assert len(trades) > 30 and [t[:2] for t in trades] == [w[:2] for w in want]
    np.testing.assert_allclose([t[2] for t in trades], [w[2] for w in want], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([t[3] for t in trades], [w[3] for w in want], rtol=1e-9)
    st, last = runner.state(), sub.index[-1]
    held = {x: st["symbols"][x]["position"] for x in RP.symbols}
    np.testing.assert_allclose(list(held.values()), res.positions.iloc[-1].to_numpy(), rtol=1e-6, atol=1e-7)
    marked = st["cash"] + sum(q * RP.bars[x]["close"].loc[last] for x, q in held.items())
    assert abs(marked - float(res.equity.iloc[-1])) < 0.01  # the books' account is the backtest's, at one mark


def test_reconciliation_finds_a_mismatch_in_the_second_asset_and_halts_only_it(basket_bundle, tmp_path):
    ex, runner, rep, *_ = _session(basket_bundle, tmp_path, 5)
    assert not any(rep[s]["mismatch"] for s in RP.symbols)
    ex.balances["BBB"][0] += 1.0  # the venue holds one BBB the books never saw (a deposit, a lost fill)
    url, stop = serve(ex)

    async def again():
        client = connect(url, "k", "s", pro=True)
        try:
            for r in runner.routers.values():
                r.client.ex = client  # the same routers, reconnected
            await asyncio.sleep(1.5)  # past the grace in which orders just sent may explain a difference
            return await runner.reconcile()
        finally:
            await client.close()

    try:
        rep = asyncio.run(again())
    finally:
        stop()
    assert [rep[s]["mismatch"] for s in RP.symbols] == [False, True, False] and not rep["cash"]["mismatch"]
    states = {s: r.risk.state for s, r in runner.routers.items()}
    assert states == {"AAA/USDT": TradingState.ACTIVE, "BBB/USDT": TradingState.HALTED, "CCC/USDT": TradingState.ACTIVE}
    ex.balances["USDT"][0] += 5.0  # cash the books never saw: the account itself is off, every symbol halts
    url, stop = serve(ex)
    try:
        rep = asyncio.run(again())
    finally:
        stop()
    assert rep["cash"]["mismatch"] and abs(rep["cash"]["venue"] - rep["cash"]["books"] - 5.0) < 1e-6
    assert all(r.risk.state == TradingState.HALTED for r in runner.routers.values())
    assert "cash mismatch" in runner.routers["AAA/USDT"].risk.reason


def test_a_symbol_without_its_bar_is_held_while_the_others_trade(basket_bundle, tmp_path):
    "The slices of the session lose CCC's bar (a stalled feed, after its grace): no order for CCC, the rest trade."

    def drop_ccc(k, sl, runner):
        return Slice(sl.ts, {**sl.bars, "CCC/USDT": None}, sl.late) if k >= 2 else sl

    ex, runner, rep, *_ = _session(basket_bundle, tmp_path, 40, hook=drop_ccc)
    late = [d for d in runner.decisions[2:]]
    assert all(d["missing"] == ["CCC/USDT"] for d in late)
    assert not any(o["symbol"] == "CCC/USDT" for d in late for o in d["orders"])
    assert any(o["symbol"] != "CCC/USDT" for d in late for o in d["orders"])
    assert all(r.risk.state == TradingState.ACTIVE for r in runner.routers.values())


def test_live_run_trades_a_basket_bundle_on_the_paper_venue(basket_bundle, tmp_path):
    "The commands a user types: `venue serve` on a basket file, `live run` on a basket bundle; the JSON summary."
    path = write_panel(RP, tmp_path / "basket.parquet")
    env = os.environ | {"INTRADAY_API_KEY": "keykeykey1", "INTRADAY_API_SECRET": "secretsecret1"}
    cli = str(Path(sys.executable).parent / "intraday")
    serve_cmd = [cli, "venue", "serve", "--data", str(path), "--port", "0", "--speed", "60", "--history", "2"]
    venue = subprocess.Popen(serve_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = venue.stdout.readline().split(" on ")[1].strip()
        r = subprocess.run([cli, "live", "run", "--bundle", str(basket_bundle), "--url", url, "--duration", "25",
                            "--state-dir", str(tmp_path / "state")], env=env, capture_output=True, text=True,
                           timeout=180)  # fmt: skip
    finally:
        venue.terminate()
        venue.wait(10)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert sorted(out["symbols"]) == RP.symbols and out["decisions"] >= 15
    assert all(x["trading_state"] == "ACTIVE" for x in out["symbols"].values())
    assert all((tmp_path / "state" / s.replace("/", "-") / "journal.sqlite").is_file() for s in RP.symbols)
    assert "basket session ended" in r.stderr


def test_a_halted_symbol_holds_while_the_others_trade(basket_bundle, tmp_path):
    "BBB's router halts at the third slice (as a mismatch or a circuit breaker halts it): BBB holds, AAA and CCC trade."
    held = {}

    def halt_bbb(k, sl, runner):
        if k == 3:
            runner.routers["BBB/USDT"].set_state(TradingState.HALTED, "test: BBB halted")
        if k == 4:  # the orders sent before the halt have filled (synced at slice 3)
            held["BBB"] = runner.pnl["BBB/USDT"].qty
        return sl

    ex, runner, rep, *_ = _session(basket_bundle, tmp_path, 40, hook=halt_bbb)
    after = runner.decisions[3:]
    bbb = [o for d in after for o in d["orders"] if o["symbol"] == "BBB/USDT"]
    assert all(o["status"].startswith("halted: test: BBB halted") for o in bbb)  # never sent
    assert runner.pnl["BBB/USDT"].qty == held["BBB"]  # its position stands
    others = [o for d in after for o in d["orders"] if o["symbol"] != "BBB/USDT"]
    assert others and all(not o["status"].startswith("halted") for o in others)
    assert [r.risk.state for r in runner.routers.values()] == [TradingState.ACTIVE, TradingState.HALTED,
                                                               TradingState.ACTIVE]  # fmt: skip


def _get(url: str):
    "(status, body) of a GET; status None when the runner does not answer yet."
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def _until(fn, timeout: float, what: str):
    "fn()'s first truthy value within `timeout` seconds."
    end = time.time() + timeout
    while time.time() < end:
        if v := fn():
            return v
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_an_operator_reads_kills_and_resumes_a_basket_runner(basket_bundle, tmp_path):
    "As an operator does: /metrics by symbol and /readyz; `live kill` halts every symbol; SIGTERM; status; resume."
    path = write_panel(RP, tmp_path / "basket.parquet")
    env = os.environ | {"INTRADAY_API_KEY": "keykeykey1", "INTRADAY_API_SECRET": "secretsecret1"}
    cli, state = str(Path(sys.executable).parent / "intraday"), tmp_path / "state"
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    serve_cmd = [cli, "venue", "serve", "--data", str(path), "--port", "0", "--speed", "60", "--history", "2"]
    venue = subprocess.Popen(serve_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = None
    try:
        url = venue.stdout.readline().split(" on ")[1].strip()
        run = subprocess.Popen([cli, "live", "run", "--bundle", str(basket_bundle), "--url", url, "--duration", "120",
                                "--state-dir", str(state), "--metrics-port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        base = f"http://127.0.0.1:{port}"

        def state_json():
            code, body = _get(base + "/state")
            return json.loads(body) if code == 200 else None

        _until(lambda: (st := state_json()) and st["decisions"] >= 5, 120, "five decisions")
        assert _get(base + "/readyz")[0] == 200  # reconciled, warm, slices arriving
        card = live_rows(state_json())  # the dashboard's Live card reads the basket's /state
        assert all(card[s].startswith("ACTIVE, ") for s in RP.symbols) and card["ready"] == "yes"
        metrics = _get(base + "/metrics")[1]
        for s in RP.symbols:  # what is a symbol's own is labelled with it, every symbol from the start
            assert f'intraday_trading_state{{symbol="{s}"}} 0.0' in metrics
            assert f'intraday_position{{symbol="{s}"}}' in metrics
            assert f'intraday_orders_total{{status="FILLED",symbol="{s}"}}' in metrics
        kill = subprocess.run([cli, "live", "kill", "--state-dir", str(state), "--reason", "operator test"], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert kill.returncode == 0, kill.stderr
        st = _until(lambda: (st := state_json()) and st["trading_state"] == "HALTED"
                    and all(x["trading_state"] == "HALTED" for x in st["symbols"].values()) and st, 60,
                    "every symbol halted by the kill file")  # fmt: skip
        assert all("killed: operator test" in x["reason"] for x in st["symbols"].values())
        metrics = _get(base + "/metrics")[1]
        assert all(f'intraday_trading_state{{symbol="{s}"}} 2.0' in metrics for s in RP.symbols)
        run.send_signal(signal.SIGTERM)  # an explicit stop: the slice in hand, then the summary
        out, err = run.communicate(timeout=60)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        venue.terminate()
        venue.wait(10)
    assert run.returncode == 0 and "Traceback" not in err, err[-3000:]
    summary = json.loads(out)
    assert all(x["trading_state"] == "HALTED" for x in summary["symbols"].values())
    status = subprocess.run([cli, "live", "status", "--state-dir", str(state)], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("kill file      present") == 3 and status.stdout.count("trading state  HALTED") == 3
    assert all(s.replace("/", "-") in status.stdout for s in RP.symbols)
    resume = subprocess.run([cli, "live", "resume", "--state-dir", str(state), "--reason", "checked"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    assert not (state / "KILL").exists()
    status = subprocess.run([cli, "live", "status", "--state-dir", str(state)], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert status.stdout.count("trading state  ACTIVE") == 3, status.stdout
