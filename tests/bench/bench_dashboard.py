"""Benchmark: the dashboard's first render with a year of minute bars behind it.

Run: .venv/bin/python tests/bench/bench_dashboard.py [--rounds 5]
Puts a year of seeded one-minute bars (525,600) in a bar store and a run folder with a bundle, serves
`intraday dashboard` on 127.0.0.1 and opens it in Debian's Chromium (Playwright, executable_path):

1. first render: navigation until the Models table is drawn, each round in a fresh browser context (empty cache),
   then in the same context each other page's first render: a click on its tab until its content is drawn (the
   Backtest form, the Live page's form, the run's status in the Runs table); best and median over the rounds, and
   the goal's verdict on the median;
2. the Backtest page on the whole year from the bar store (SMA 20/100 and buy & hold, compiled engine): click until
   the figures are drawn, beside the page's own compute time (backtest and metrics);
3. the peer: the same equity-and-drawdown figure drawn by BokehJS in the same browser, decimated (what the page
   sends) against every point (what a page without decimation would send), best of the rounds.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bokeh.embed import file_html
from bokeh.resources import INLINE
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_unattended import fixed_bundle  # noqa: E402 (a real bundle, as the browser test uses)

from intraday.backtest import Backtester, BuyAndHold, SMACross  # noqa: E402
from intraday.config import load_settings  # noqa: E402
from intraday.dashboard import equity_figure  # noqa: E402
from intraday.data import BarStore, synth_market  # noqa: E402
from intraday.features import FeaturePipeline  # noqa: E402
from intraday.fills import FillModel  # noqa: E402

TABS = {  # each page after the first, and what shows that it is drawn
    "Backtest": lambda page: page.get_by_role("button", name="Run backtest"),
    "Live": lambda page: page.get_by_role("button", name="Add runner"),
    "Runs and jobs": lambda page: page.get_by_role("cell", name="started", exact=True),  # run-year's status
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def draw_time(page, fig, cap_s: float = 120.0) -> float:
    "Seconds from handing BokehJS the figure to its document being drawn (BokehJS inline: offline); inf past cap_s."
    html = file_html(fig, INLINE, "peer")
    t0 = time.perf_counter()
    try:
        page.set_content(html, timeout=cap_s * 1e3)
        page.wait_for_function(
            "window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle", timeout=cap_s * 1e3
        )  # fmt: skip (idle: every view rendered)
    except PlaywrightTimeout:
        return float("inf")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    bars = synth_market(days=365, seed=3)
    BarStore(tmp / "store").append(bars, "synthetic", "SYN/USDT", "1m")
    fixed_bundle(tmp / "runs" / "run-year" / "bundle", "0,1", 1)
    env = {**os.environ, "INTRADAY__DATA__STORE": str(tmp / "store"), "INTRADAY__TRAIN__RUNS_DIR": str(tmp / "runs")}
    port = free_port()
    exe = str(Path(sys.executable).parent / "intraday")
    proc = subprocess.Popen([exe, "dashboard", "--port", str(port)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_up(f"http://127.0.0.1:{port}/liveness", proc)
        url = f"http://127.0.0.1:{port}/15_dashboard"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            firsts, tabs = [], {name: [] for name in TABS}
            for _ in range(args.rounds):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                page.get_by_text("run-year").first.wait_for(timeout=60_000)
                firsts.append(time.perf_counter() - t0)
                for name, drawn in TABS.items():  # each page's first render: the click until its content is drawn
                    t0 = time.perf_counter()
                    page.get_by_text(name, exact=True).first.click()
                    drawn(page).wait_for(timeout=60_000)
                    tabs[name].append(time.perf_counter() - t0)
                ctx.close()
            print(f"a year of one-minute bars behind the dashboard: {len(bars):,} bars in the bar store", flush=True)
            verdict = "met" if statistics.median(firsts) < 2 else "NOT met"  # the median, not the best round
            print(
                f"first render (navigation -> Models table), {args.rounds} fresh contexts: best {min(firsts):.2f} s, "
                f"median {statistics.median(firsts):.2f} s (goal < 2 s: {verdict}); "
                f"rounds {[round(x, 2) for x in firsts]}"
            )
            for name, ts in tabs.items():
                print(f"  first render of the {name} page (click -> drawn): best {min(ts):.2f} s, median "
                      f"{statistics.median(ts):.2f} s; rounds {[round(x, 2) for x in ts]}")  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_text("Backtest", exact=True).first.click()
            page.locator("select:visible").first.select_option(label="rule: SMA 20/100")
            t0 = time.perf_counter()
            page.get_by_role("button", name="Run backtest").click()
            page.get_by_text("equity against the baselines, and drawdown (").wait_for(timeout=120_000)
            status = page.get_by_text(re.compile(r"^done: .*backtest, metrics and figures"))
            expect(status).to_be_visible()
            page.locator("canvas:visible").nth(2).wait_for()
            backtest_click = time.perf_counter() - t0
            compute = float(re.search(r"backtest, metrics and figures ([\d.]+) s", status.inner_text()).group(1))
            print(f"backtest page, the whole year (SMA 20/100 + buy & hold): click -> figures drawn "
                  f"{backtest_click:.2f} s, of which backtest, metrics and figures on the server {compute:.2f} s; "
                  f"transfer and drawing {backtest_click - compute:.2f} s", flush=True)  # fmt: skip

            s = load_settings(environ={})
            bt = Backtester(FeaturePipeline.from_settings(s.features, "1m"), FillModel.from_settings(s.fills), s.env,
                            s.risk)  # fmt: skip
            results = {"buy & hold": bt.run(bars, BuyAndHold(s.env.positions)),
                       "SMA 20/100": bt.run(bars, SMACross(s.env.positions, 20, 100))}  # fmt: skip
            shown, full = equity_figure(results), equity_figure(results, n=len(bars))
            points = lambda f: sum(len(r.data_source.data["x"]) for p in f.children for r in p.renderers)  # noqa: E731
            peer = browser.new_page(viewport={"width": 1400, "height": 1000})
            thin_t = [draw_time(peer, shown) for _ in range(args.rounds)]
            full_t = draw_time(peer, full)  # once: it is the slow one
            browser.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)  # the year's bar store: ~23 MB per run
    slower = f"{full_t / min(thin_t):.0f}x slower" if full_t < float("inf") else "not drawn within 120 s"
    print(f"equity figure drawn by BokehJS: decimated ({points(shown):,} points) best {min(thin_t):.2f} s; every "
          f"point ({points(full):,}) {full_t:.2f} s: {slower}")  # fmt: skip


if __name__ == "__main__":
    main()
