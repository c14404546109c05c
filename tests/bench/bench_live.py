"""Benchmark: a paper session over 10,000 one-minute bars replayed through the venue as fast as it goes.

Run: .venv/bin/python tests/bench/bench_live.py [--bars 10000]

The venue (stepped clock, the bundle's FillModel) steps one bar; the runner receives it through ccxt.pro's
watch_ohlcv, updates its orders and PnL, decides with the bundle and sends through risk + router + journal.
Prints p50/p99 of receipt -> decision (goal p99 <= 1 ms) and bar close -> ack through ccxt on loopback (goal p99
<= 10 ms; the seed's budget is 50 ms), where "bar close" is the venue's step; then paper == backtest: the session's
fills against the Backtester's over the same bars and bundle, without faults and under the execution benchmark's
10 % fault profile (how far it drifts, and why). Writes the latency histograms of the session to
reports/bench_live_latency.html (and .png where Chromium can screenshot it).
"""

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from intraday.backtest import Backtester, bundle_policy
from intraday.binance import MarketSpec, connect, serve
from intraday.bundle import PolicyBundle, export_bundle
from intraday.config import LiveSettings, RiskSettings, load_settings
from intraday.data import synth_market
from intraday.journal import Journal
from intraday.live import BarFeed, LiveRunner
from intraday.monitor import write_latency_figure
from intraday.risk import Risk
from intraday.router import Router, ledger_audit
from intraday.train import Trainer
from intraday.venue import Venue

sys.path.insert(0, str(Path(__file__).parent))
from bench_execution import fault_profile  # noqa: E402  (the one fault mix of the execution benchmark)


def tiny_bundle(bars, out: Path) -> Path:
    "A small long-only PPO bundle (a spot venue cannot short): enough to trade, quick to train."
    train = {"total_timesteps": 4096, "n_envs": 2, "n_steps": 256, "batch_size": 128, "eval_every": 4096,
             "runs_dir": str(out)}  # fmt: skip
    s = load_settings(environ={}, env={"episode_len": 1440, "positions": "0, 0.5"}, train=train)
    trainer = Trainer(s, bars.iloc[:20_000], out / "run", progress=False)
    model = trainer.fit()
    sp = trainer.splits
    return export_bundle(model, sp.pipeline, sp.fill_model, sp.env, out / "bundle")


async def session(bars, bundle: Path, start: int, n: int, faults: dict | None):
    b = PolicyBundle.load(bundle)
    spec = MarketSpec(step_size=1e-8, min_qty=1e-8, min_notional=1e-6)
    venue = Venue(bars, start=start, admin=True, keys={"k": "s"}, fill_model=b.fill_model(), spec=spec,
                  balances={"USDT": b.env_settings().initial_cash, "SYN": 0.0}, faults=faults)  # fmt: skip
    url, stop = serve(venue)
    ex = connect(url, "k", "s", pro=True)
    # replayed as fast as it goes, the session sends orders far faster than a minute-bar strategy would: the order
    # throttle (10/s by default) would be what is measured, so it is opened up here
    s = LiveSettings(runner="bl", unknown_grace_s=2.0, retry_base_s=0.02, retry_max_s=0.5, retry_attempts=12,
                     reconcile_every_s=1e9, order_rate=1e6, order_burst=1000)  # fmt: skip
    risk = Risk(RiskSettings(max_orders_per_minute=1_000_000, reject_limit=1_000_000))
    router = Router(ex, Journal(Path(tempfile.mkdtemp()) / "state", runner="bl"), "SYN/USDT", risk, s)
    try:
        await router.start()
        runner = LiveRunner(router, BarFeed(ex, "SYN/USDT", "1m", closed_only=True), bundle)
        await runner.start()
        fills = asyncio.ensure_future(runner.watch_fills())  # the user data stream, as `run` has it
        steps = []
        for _ in range(n):
            steps.append(time.time())
            venue.step()
            while True:
                try:
                    bar = await runner.feed.next()
                    await runner.on_bar(bar)
                    break
                except Exception as e:  # under faults: the next bar tries again (a faulted read is not fatal)
                    print(f"  bar error: {type(e).__name__}: {str(e)[:80]}")
                    break
        fills.cancel()
        for od in list(router.journal.live_orders()):
            await router.sync(od)
        ledger = venue.ledger()
        audit = ledger_audit(ledger, router.journal, "SYN")
        return runner, steps, ledger, audit
    finally:
        await ex.close()
        stop()


def pct(x, q):
    return float(np.percentile(np.asarray(x) * 1e3, q)) if len(x) else float("nan")


def compare(bars, bundle, start, n, ledger, runner) -> str:
    "The session's fills against the Backtester's over the same bars."
    b = PolicyBundle.load(bundle)
    pipe = b.pipeline()
    first = start - pipe.warmup
    res = Backtester(pipe, b.fill_model(), b.env_settings()).run(
        bars.iloc[first:], bundle_policy(b), start=pipe.warmup + 1, end=pipe.warmup + 1 + n
    )
    paper = np.array([(t["qty"] * (1 if t["isBuyer"] else -1), t["price"]) for t in ledger["trades"]]).reshape(-1, 2)
    back = np.array(list(zip(res.fills.qty, res.fills.price, strict=True))).reshape(-1, 2)
    same = len(paper) == len(back) and np.allclose(paper, back, rtol=1e-6, atol=1e-6)
    k = min(len(paper), len(back))
    first_diff = next((i for i in range(k) if not np.allclose(paper[i], back[i], rtol=1e-6, atol=1e-6)), k)
    eq_live, eq_bt = runner.state()["equity"], float(res.equity.iloc[-1])
    return (f"fills {len(paper)} paper vs {len(back)} backtest, identical {same} (first difference at fill "
            f"{first_diff}), final equity {eq_live:.4f} vs {eq_bt:.4f} ({eq_live / eq_bt - 1:+.3e})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=10_000)
    a = ap.parse_args()
    bars = synth_market(days=int((a.bars + 3000) / 1440) + 15, seed=5)
    tmp = Path(tempfile.mkdtemp())
    t0 = time.time()
    bundle = tiny_bundle(bars, tmp)
    start = 20_000 + 100
    print(f"bundle trained in {time.time() - t0:.0f} s; session over {a.bars:,} bars from bar {start}")
    runner, steps, ledger, audit = asyncio.run(session(bars, bundle, start, a.bars, None))
    d = runner.decisions
    recv = [x["decided"] - x["received"] for x in d]
    acks = [x["acked"] - s for x, s in zip(d, steps[-len(d) :], strict=True) if x["acked"]]
    print(f"{len(d):,} decisions, {sum(1 for x in d if x['acked']):,} orders; audit: duplicates {audit['duplicates']}, "
          f"lost {audit['lost']}, mismatches {audit['mismatches']}")  # fmt: skip
    print("latency (ms)                p50      p99    goal p99")
    print(f"  receipt -> decision    {pct(recv, 50):8.3f} {pct(recv, 99):8.3f}    1")
    print(f"  bar close -> ack       {pct(acks, 50):8.3f} {pct(acks, 99):8.3f}    10")
    out = Path("reports")
    out.mkdir(exist_ok=True)
    written = write_latency_figure(runner.monitor.registry, out / "bench_live_latency")
    html = [p for p in written if str(p).endswith(".html")][0]
    png = out / "bench_live_latency.png"
    shot = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", f"--screenshot={png.resolve()}", "--window-size=1100,900",
                           f"file://{Path(html).resolve()}"], capture_output=True, timeout=60)  # fmt: skip
    print(f"latency histograms: {html}" + (f", {png}" if shot.returncode == 0 and png.exists() else ""))
    print("paper == backtest, no faults:", compare(bars, bundle, start, a.bars, ledger, runner))
    m = min(a.bars, 2000)
    runner2, _, ledger2, audit2 = asyncio.run(session(bars, bundle, start, m, fault_profile()))
    print(f"paper == backtest, 10 % faults ({m:,} bars):", compare(bars, bundle, start, m, ledger2, runner2))
    print(f"  under faults: duplicates {audit2['duplicates']}, lost {audit2['lost']}, mismatches "
          f"{audit2['mismatches']}, {sum(runner2.router.retry.retries.values())} reads retried; "
          f"in lockstep every faulted create is resolved (by query) before the next bar, so nothing drifts; against a "
          f"clock, a create resolved after the bar's close fills a bar later, at that bar's price")  # fmt: skip


if __name__ == "__main__":
    main()
