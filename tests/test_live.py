"""The live runner against the paper venue through the real ccxt.pro client on 127.0.0.1: paper == backtest bar
for bar, a stalled stream polled over REST without skipping a bar, the bundle hot swap, shadow mode, and the
runner's CLI killed with SIGKILL and restarted."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from intraday.backtest import Backtester, bundle_policy
from intraday.binance import MarketSpec, connect, serve
from intraday.bundle import SIGNED_FILES, PolicyBundle, export_bundle
from intraday.config import LiveSettings, RiskSettings, load_settings
from intraday.data import synth_market
from intraday.journal import Journal
from intraday.live import BarFeed, LiveRunner
from intraday.risk import Risk
from intraday.router import Router, ledger_audit
from intraday.signing import sign_folder
from intraday.train import Trainer
from intraday.venue import Venue

BARS = synth_market(days=12, seed=8)
SPEC = MarketSpec(step_size=1e-8, min_qty=1e-8, min_notional=1e-6)  # no rounding of the backtest's quantities


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    "Two small PPO bundles (seeds 0 and 1) for the spot venue (long-only, weight 1: the cash cap binds), one pipeline."
    tmp = tmp_path_factory.mktemp("live")
    out = []
    for seed in (0, 1):
        train = {"total_timesteps": 2048, "n_envs": 2, "n_steps": 256, "batch_size": 128, "eval_every": 2048,
                 "seed": seed, "runs_dir": str(tmp)}  # fmt: skip
        s = load_settings(environ={}, env={"episode_len": 400, "positions": "0, 1", "account": "spot"}, train=train)
        trainer = Trainer(s, BARS, tmp / f"run{seed}")
        model = trainer.fit()
        sp = trainer.splits
        out.append(export_bundle(model, sp.pipeline, sp.fill_model, sp.env, tmp / f"bundle{seed}"))
    return out


def venue_for(bundle: Path, start: int, keys=None, **kw) -> Venue:
    b = PolicyBundle.load(bundle)
    cash = b.env_settings().initial_cash
    return Venue(BARS, start=start, admin=True, keys=keys or {"k": "s"}, fill_model=b.fill_model(), spec=SPEC,
                 balances={"USDT": cash, "SYN": 0.0}, **kw)  # fmt: skip


async def make_runner(url, state, bundle, shadow=False, stale_s=3.0) -> LiveRunner:
    ex = connect(url, "k", "s", pro=True)
    s = LiveSettings(runner="lv", unknown_grace_s=1.0, retry_base_s=0.02)
    router = Router(ex, Journal(state, runner="lv"), "SYN/USDT", Risk(RiskSettings()), s)
    await router.start()
    feed = BarFeed(ex, "SYN/USDT", "1m", stale_s=stale_s, closed_only=True)
    runner = LiveRunner(router, feed, bundle, shadow=shadow)
    await runner.start()
    return runner


def test_paper_session_equals_the_backtest_bar_for_bar(bundles, tmp_path):
    bundle = bundles[0]
    pipe = PolicyBundle.load(bundle).pipeline()
    start, n = pipe.warmup + 200, 150
    venue = venue_for(bundle, start)
    url, stop = serve(venue)

    async def session():
        r = await make_runner(url, tmp_path / "state", bundle)
        for _ in range(n):
            venue.step()
            await r.on_bar(await r.feed.next())  # lockstep: the decision is acked before the next bar
        a = ledger_audit(venue.ledger(), r.router.journal, "SYN")
        st = r.state()
        await r.feed.close()
        await r.router.ex.close()
        return a, st, r

    audit, state, runner = asyncio.run(session())
    stop()
    denied = [o.reason for o in runner.router.journal.orders.values() if o.status.value in ("DENIED", "REJECTED")]
    assert denied == [], denied[:3]
    assert (audit["duplicates"], audit["lost"], audit["mismatches"]) == (0, 0, 0)
    first = start - pipe.warmup
    b = PolicyBundle.load(bundle)
    bt = Backtester(pipe, b.fill_model(), b.env_settings())
    res = bt.run(BARS.iloc[first:], bundle_policy(b), start=pipe.warmup + 1, end=pipe.warmup + 1 + n)
    trades = venue.ledger()["trades"]
    paper = [(t["qty"] * (1 if t["isBuyer"] else -1), t["price"], t["commission"]) for t in trades]
    back = list(zip(res.fills.qty, res.fills.price, res.fills.fee, strict=True))
    print(f"paper == backtest: {len(paper)} fills vs {len(back)}, final equity {state['equity']:.6f} vs "
          f"{res.equity.iloc[-1]:.6f}")  # fmt: skip
    assert len(back) >= 3, "the policy must trade for the comparison to mean anything"
    assert len(paper) == len(back)
    np.testing.assert_allclose(np.array(paper), np.array(back), rtol=1e-6, atol=1e-6)
    assert [t["time"] for t in trades] == [int(t.value // 1_000_000) for t in res.fills.index]
    assert state["equity"] == pytest.approx(res.equity.iloc[-1], rel=1e-8)
    dec, bt_dec = [d["target_weight"] for d in runner.decisions], res.decisions.target.tolist()
    assert len(bt_dec) == n - 1 and dec[: len(bt_dec)] == bt_dec  # the backtest's last bar has no fill to come


def test_a_silent_stream_is_polled_over_rest_and_no_bar_is_skipped(bundles, tmp_path):
    venue = venue_for(bundles[0], 600)
    url, stop = serve(venue)

    async def session():
        r = await make_runner(url, tmp_path / "state", bundles[0], stale_s=0.5)
        venue.step()
        first = await r.feed.next()
        for wire in venue.listeners:  # the websocket stays open but nothing arrives: a stalled stream
            for conn in getattr(wire, "conns", {}).values():
                conn.streams.clear()
        venue.step(3)
        got = [await asyncio.wait_for(r.feed.next(), 10) for _ in range(3)]
        await r.feed.close()
        await r.router.ex.close()
        return first, got, r.feed

    first, got, feed = asyncio.run(session())
    stop()
    step = 60_000
    assert [b.ts for b in got] == [first.ts + step, first.ts + 2 * step, first.ts + 3 * step]
    assert feed.polls >= 1 and {b.source for b in got} <= {"rest", "backfill", "stream"}


def test_hot_swap_verified_refused_and_shadow(bundles, tmp_path):
    live = tmp_path / "current"
    shutil.copytree(bundles[0], live)
    venue = venue_for(bundles[0], 700)
    url, stop = serve(venue)

    async def session():
        r = await make_runner(url, tmp_path / "state", live)
        sha0 = r.bundle.manifest["policy_sha256"]
        shutil.rmtree(live)
        shutil.copytree(bundles[1], live)  # a new champion arrives between bars
        os.utime(live / "manifest.json")
        venue.step()
        await r.on_bar(await r.feed.next())
        sha1 = r.bundle.manifest["policy_sha256"]
        (live / "policy.pt").write_bytes(b"tampered")
        os.utime(live / "manifest.json", (time.time() + 5, time.time() + 5))
        venue.step()
        await r.on_bar(await r.feed.next())  # refused: the old one keeps trading
        shutil.rmtree(live)
        shutil.copytree(bundles[0], live)  # a valid bundle, re-signed by a key the runner does not trust
        sign_folder(live, SIGNED_FILES, Ed25519PrivateKey.generate())
        venue.step()
        await r.on_bar(await r.feed.next())  # refused too
        text = r.monitor.metrics_text()
        out = (sha0, sha1, r.bundle.manifest["policy_sha256"], dict(r.swaps), text)
        await r.feed.close()
        await r.router.ex.close()
        return out

    sha0, sha1, sha_after, swaps, text = asyncio.run(session())
    assert sha0 != sha1 and sha_after == sha1 and swaps == {"accepted": 1, "refused": 2}
    assert 'intraday_bundle_swaps_total{result="refused"} 2.0' in text
    assert f'hash="{sha1}"' in text

    stop()
    pipe = PolicyBundle.load(bundles[0]).pipeline()
    venue = venue_for(bundles[0], pipe.warmup + 200)  # the window where the paper test sees the policy trade
    url, stop = serve(venue)

    async def shadow():
        r = await make_runner(url, tmp_path / "shadow", bundles[0], shadow=True)
        before = len(venue.ledger()["orders"])
        for _ in range(150):
            venue.step()
            await r.on_bar(await r.feed.next())
        sent = len(venue.ledger()["orders"]) - before
        shadows = [o for o in r.router.journal.orders.values() if o.reason.startswith("shadow")]
        await r.feed.close()
        await r.router.ex.close()
        return sent, shadows, r.decisions

    sent, shadows, decisions = asyncio.run(shadow())
    stop()
    assert sent == 0  # nothing reached the venue
    assert len(shadows) == sum(1 for d in decisions if d["status"] == "shadow") > 0


def test_cli_session_killed_and_restarted_reconciles(bundles, tmp_path):
    key, secret = "live-test-key", "live-test-secret-9f2c"  # long enough that redacting them hides nothing else
    venue = venue_for(bundles[0], 1600, keys={key: secret}, speed=60.0)  # past the feature warm-up (1,439 bars)
    url, stop = serve(venue)
    env = os.environ | {
        "INTRADAY_API_KEY": key,
        "INTRADAY_API_SECRET": secret,
        "PYTHONPATH": os.getcwd(),
        "INTRADAY__OBS__LOG_FILE": str(tmp_path / "log.jsonl"),
        "INTRADAY__OBS__LOG_LEVEL": "DEBUG",
        "INTRADAY__OBS__CCXT_LOG_LEVEL": "DEBUG",  # ccxt's own logger at DEBUG too: its request lines carry the key
    }
    exe = str(Path(sys.executable).parent / "intraday")
    args = [exe, "live", "--bundle", str(bundles[0]), "--url", url, "--state-dir", str(tmp_path / "st"),
            "--metrics-port", "0", "--duration", "60"]  # fmt: skip
    p = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen, t0 = [], time.time()
        while not (seen and "metrics and control:" in seen[-1]) and time.time() - t0 < 90 and p.poll() is None:
            seen.append(p.stderr.readline())
        assert "metrics and control:" in seen[-1], "".join(seen)[-3000:]
        base = seen[-1].split("metrics and control: ")[1].split("/metrics")[0]
        time.sleep(4)  # a few bars at 60x
        state = json.loads(urllib.request.urlopen(base + "/state", timeout=10).read())
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        assert state["decisions"] >= 1 and "intraday_decision_seconds_bucket" in metrics
        os.kill(p.pid, signal.SIGUSR1)  # the kill switch by signal
        time.sleep(1.5)
        state = json.loads(urllib.request.urlopen(base + "/state", timeout=10).read())
        assert state["trading_state"] == "HALTED" and state["reason"] == "killed: signal SIGUSR1"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        again = subprocess.run(args[:-1] + ["3"], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr[-2000:]
        assert json.loads(again.stdout)["trading_state"] == "HALTED"  # the kill survived the SIGKILL and restart
    finally:
        if p.poll() is None:
            p.kill()
        stop()
    lines = []
    for x in (tmp_path / "log.jsonl").read_text().splitlines():
        try:
            lines.append(json.loads(x))
        except json.JSONDecodeError:  # the line the SIGKILL cut short
            continue
    rec = [x for x in lines if str(x.get("record", {}).get("message", "")).startswith("reconciled")]
    assert len(rec) >= 2 and rec[-1]["record"]["extra"]["duplicates"] == 0
    text = (tmp_path / "log.jsonl").read_text()
    assert any(x["record"]["name"].startswith("ccxt") for x in lines)  # ccxt's DEBUG request lines are there
    assert secret not in text and key not in text and "***" not in rec[-1]["record"]["message"]
