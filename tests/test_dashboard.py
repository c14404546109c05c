"""Issue 26, the dashboard: its pages driven in-process, then served by `intraday dashboard` and driven in Debian's
Chromium (Playwright, no browser download) against a live runner trading on the paper venue, all on 127.0.0.1."""

import asyncio
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import panel as pn
import pytest
from playwright.sync_api import expect
from procs import stderr_of
from test_unattended import KEY, SECRET, fixed_bundle

from intraday.cli import build_parser, dashboard_command
from intraday.config import load_settings
from intraday.control import ControlServer
from intraday.dashboard import BacktestPage, Dashboard, LivePage, ModelsPage, RunnerControl, list_runs, run_models
from intraday.data import synth_market, write_bars
from intraday.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports" / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dash-token-0123456789"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A run folder as training leaves it: a real bundle (holds half the equity), metrics, lineage, a report."
    root = tmp_path_factory.mktemp("dashboard")
    run = root / "runs" / "run-half"
    fixed_bundle(run / "bundle", "0,0.5", 1)
    (run / "metrics.json").write_text(json.dumps({"test": {"sharpe": 0.5}}))
    (run / "lineage.json").write_text(json.dumps({"data_hash": "abc", "git_revision": "f00"}))
    (run / "report.html").write_text("<html><body>report of run-half</body></html>")
    market = root / "market.parquet"
    write_bars(synth_market(days=3, seed=5), market, {"symbol": "SYN/USDT"})
    return root


def settings_for(root: Path):
    "Default settings with the run folders under `root` and the test session's bundle keys (tests/conftest.py)."
    keys = {k: v for k, v in os.environ.items() if k.startswith("INTRADAY__BUNDLE__")}
    return load_settings(environ=keys, train={"runs_dir": str(root / "runs")})


# --- the pages in-process -------------------------------------------------------------------------------------------


def test_models_and_runs_pages_list_the_run_folder_and_show_a_bundle(runs):
    models = run_models(runs / "runs")
    assert models.loc[0, ["run", "bundle", "problem"]].tolist() == ["run-half", "bundle", ""]
    page = ModelsPage(settings_for(runs), static="runs")
    assert 'href="runs/run-half/report.html"' in page.table.object and page.detail.object == ""
    page.show(models.path[0])
    assert "policy bundle" in page.detail.object and "run lineage" in page.detail.object
    page.show(str(runs))  # not a bundle: the reason, on the page
    assert "cannot load" in page.detail.object
    assert list_runs(runs / "runs").loc[0, ["run", "status"]].tolist() == ["run-half", "done"]


def test_backtest_page_runs_a_bundle_and_says_why_a_bad_choice_cannot_run(runs):
    page = BacktestPage(settings_for(runs))
    page.policy.value = next(v for k, v in page.policy.options.items() if k.startswith("bundle: run-half"))
    page.data.value, page.start.value = str(runs / "market.parquet"), "2024-01-02"
    results = asyncio.run(page.run())
    assert list(results) == ["policy (bundle)", "buy & hold", "SMA 20/100"]
    assert page.equity.visible and page.equity.object.children[0].title.text.startswith("equity against the baselines")
    assert page.trades.object.title.text == "policy (bundle): price, position and trades"
    assert "Sharpe 95% CI low" in page.table.object.index and page.status.object.startswith("done: ")
    page.data.value = str(runs / "missing.parquet")
    assert asyncio.run(page.run()) is None
    assert "backtest failed" in page.status.object and "missing.parquet: no such file" in page.status.object
    assert not page.run_button.disabled


def test_live_card_polls_a_control_server_and_kills_only_with_the_token():
    "A real ControlServer (the runner's own endpoints) with a state and a kill that flips it."
    state = {"trading_state": "ACTIVE", "position": 0.25, "avg_price": 100.0, "equity": 1e4, "decisions": 3}
    kill = lambda reason: state.update(trading_state="HALTED", reason=reason) or {"halted": True}  # noqa: E731
    with ControlServer(Monitor(), state=lambda: dict(state), kill=kill, token=TOKEN) as server:
        page = LivePage([server.url], period_ms=1000)
        assert page.add(server.url) is None and len(page.cards) == 1  # a URL is watched once
        card = page.cards[0]
        asyncio.run(page.refresh())
        rows = card.rows.object["value"]
        assert rows["position"] == "0.25 @ 100.0000" and rows["trading state"] == "ACTIVE"
        card.ask("kill")
        assert card.confirm.visible and card.confirm.label == f"Confirm kill of {server.url}"
        page.token.value = "not-the-token"
        ok, text = asyncio.run(card.send())
        assert not ok and "wrong or missing token" in text and state["trading_state"] == "ACTIVE"
        assert card.message.object.startswith("**refused**") and not card.confirm.visible
        card.ask("kill")
        page.token.value, card.reason.value = TOKEN, "desk"
        ok, text = asyncio.run(card.send())
        assert ok and state["trading_state"] == "HALTED" and state["reason"] == "desk"
        assert card.rows.object["value"]["trading state"] == "HALTED (desk)"  # refreshed after the action
    assert "unreachable" in RunnerControl(server.url, timeout=0.5).state()["error"]


def test_dashboard_command_serves_the_notebook_on_loopback_with_local_assets(runs):
    args = build_parser().parse_args(["dashboard", "--port", "5123", "--runner", "http://127.0.0.1:9100"])
    argv, env = dashboard_command(args, settings_for(runs))
    assert argv[1:4] == ["-m", "panel", "serve"] and argv[4].endswith("15_dashboard.ipynb")
    assert argv[argv.index("--address") + 1] == "127.0.0.1" and f"runs={runs / 'runs'}" in argv
    assert env["BOKEH_RESOURCES"] == "server" and env["INTRADAY_DASHBOARD_RUNNERS"] == "http://127.0.0.1:9100"
    bad = build_parser().parse_args(["dashboard", "--runner", "127.0.0.1:9100"])
    with pytest.raises(ValueError, match="expected a control URL"):
        dashboard_command(bad, settings_for(runs))
    with pytest.raises(FileNotFoundError, match="dashboard notebook nope.ipynb not found"):
        dashboard_command(build_parser().parse_args(["dashboard", "--notebook", "nope.ipynb"]), settings_for(runs))
    board = Dashboard(settings_for(runs), runners=[], static="runs")
    assert [board.tabs._names[i] for i in range(4)] == ["Models", "Backtest", "Live", "Runs and jobs"]
    # the Backtest and Runs pages are built when their tab is first opened, from what the Models page read
    assert "backtest" not in vars(board) and "runs" not in vars(board) and not board.tabs[3].objects
    board.tabs.active = 3
    assert board.tabs[3].objects == [board.runs.view] and "run-half" in board.runs.table.object
    assert "bundle: run-half/bundle" in board.backtest.policy.options and "backtest" in vars(board)
    # what panel serve runs at each page view: the notebook's exported cells and its app cell, not its checks
    served = [c.source for c in nbformat.read(argv[4], as_version=4).cells]
    assert served[-1].startswith("app = Dashboard()") and not any("test_eq" in c for c in served)


# --- served, in Chromium, against a live runner on the paper venue -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, timeout: float = 5.0) -> dict:
    req = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def wait_for(what: str, fn, timeout: float = 30.0, every: float = 0.2):
    "Poll fn until it returns a true value; fail naming `what`."
    end = time.time() + timeout
    while time.time() < end:
        try:
            got = fn()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def served(runs):
    "The paper venue (stepped clock), a CLI runner with the half bundle, and `intraday dashboard` watching it."
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing at /usr/bin/chromium (.ci/run installs it: apt-get install chromium)")
    exe = str(Path(sys.executable).parent / "intraday")
    env = {**os.environ, "INTRADAY_API_KEY": KEY, "INTRADAY_API_SECRET": SECRET, "INTRADAY_CONTROL_TOKEN": TOKEN}
    procs = []

    def start(*args, **kw):
        p = subprocess.Popen([exe, *args], env=kw.pop("env", env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, **kw)  # fmt: skip
        procs.append(p)
        return p

    try:
        venue = start("venue", "serve", "--data", str(runs / "market.parquet"), "--step", "--history", "1",
                      "--port", "0")  # fmt: skip
        line = venue.stdout.readline()
        url = line.split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:"), stderr_of(venue)
        control = f"http://127.0.0.1:{free_port()}"
        runner = start("live", "--bundle", str(runs / "runs" / "run-half" / "bundle"), "--url", url,
                       "--metrics-port", control.rsplit(":", 1)[1], "--state-dir", str(runs / "state"))  # fmt: skip
        wait_for("the runner's /state", lambda: runner.poll() is None and http("GET", control + "/state")["warm"])
        port = free_port()
        dash_env = {k: v for k, v in env.items() if k != "INTRADAY_CONTROL_TOKEN"}  # the dashboard never has it
        dash_env["INTRADAY__TRAIN__RUNS_DIR"] = str(runs / "runs")
        dash = start("dashboard", "--port", str(port), "--runner", control, env=dash_env)
        page_url = f"http://127.0.0.1:{port}/15_dashboard"
        wait_for("the dashboard", lambda: dash.poll() is None and http("GET", f"http://127.0.0.1:{port}/liveness"),
                 timeout=90)  # fmt: skip
        yield {"venue": url, "control": control, "page": page_url, "procs": procs}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module")
def browser(served):
    "One Chromium page on the dashboard; every request it makes is recorded."
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        requests, navigations = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
        t0 = time.perf_counter()
        page.goto(served["page"])
        page.get_by_text("run-half").first.wait_for(timeout=30_000)
        yield {"page": page, "requests": requests, "navigations": navigations, "first": time.perf_counter() - t0}
        b.close()


def tab(page, name: str) -> None:
    page.get_by_text(name, exact=True).first.click()


def row(page, name: str):
    "The value cell of a runner card's row `name` (its table: one th, one td per row)."
    return page.locator("tr").filter(has=page.locator("th", has_text=re.compile(f"^{re.escape(name)}$"))).locator("td")


def test_browser_models_and_runs_pages(browser):
    page = browser["page"]
    print(f"first render of the dashboard: {browser['first']:.2f} s")
    mlflow = page.get_by_role("link", name="http://127.0.0.1:5000")  # MLflow's own UI ([dashboard] mlflow_ui)
    assert mlflow.get_attribute("href") == "http://127.0.0.1:5000" and mlflow.get_attribute("target") == "_blank"
    report = page.get_by_role("link", name="report.html").first  # the run's report, on the static route
    assert report.get_attribute("href") == "runs/run-half/report.html" and report.get_attribute("target") == "_blank"
    page.locator("select:visible").first.select_option(label="run-half/bundle")
    page.get_by_text("run lineage").wait_for()
    page.screenshot(path=SHOTS / "models.png", full_page=True)
    tab(page, "Runs and jobs")
    page.get_by_text("done", exact=True).first.wait_for()
    page.screenshot(path=SHOTS / "runs.png", full_page=True)


def test_browser_live_page_shows_the_ledger_position_updates_and_kills_with_the_token(served, browser):
    page, control, venue = browser["page"], served["control"], served["venue"]
    state = lambda: http("GET", control + "/state")  # noqa: E731
    for _ in range(2):  # a bar: the runner decides to hold half; the next: its market order fills
        n = state()["decisions"]
        http("POST", venue + "/admin/step")
        wait_for("the runner's decision on the new bar", lambda n=n: state()["decisions"] > n)
    held = wait_for("a position at the venue", lambda: http("GET", venue + "/admin/ledger")["balances"]["SYN"]["total"])
    tab(page, "Live")
    # the position the venue's ledger holds, polled onto the page
    expect(row(page, "position")).to_have_text(re.compile(f"^{re.escape(f'{held:g}')} @"), timeout=15_000)
    decisions = state()["decisions"]
    expect(row(page, "decisions")).to_have_text(str(decisions), timeout=15_000)
    http("POST", venue + "/admin/step")
    wait_for("the next decision", lambda: state()["decisions"] > decisions)
    expect(row(page, "decisions")).to_have_text(str(decisions + 1), timeout=15_000)  # no reload: the server pushed it
    assert len(browser["navigations"]) == 1, browser["navigations"]
    page.screenshot(path=SHOTS / "live.png", full_page=True)

    token = page.locator("input[type=password]")
    token.fill("wrong-token")
    page.get_by_role("button", name="Kill").click()
    page.get_by_role("button", name=f"Confirm kill of {control}").click()
    page.get_by_text("wrong or missing token").first.wait_for()
    assert state()["trading_state"] == "ACTIVE"
    token.fill(TOKEN)
    page.get_by_role("button", name="Kill").click()
    page.get_by_role("button", name=f"Confirm kill of {control}").click()
    page.get_by_text("kill accepted").first.wait_for()
    assert state()["trading_state"] == "HALTED"
    expect(row(page, "trading state")).to_have_text(re.compile(r"^HALTED"), timeout=15_000)
    page.screenshot(path=SHOTS / "live_killed.png", full_page=True)
    page.get_by_placeholder("http://127.0.0.1:9100").fill("http://127.0.0.1:9")  # a runner that is not there
    page.get_by_role("button", name="Add runner").click()
    page.get_by_text("http://127.0.0.1:9 unreachable").first.wait_for(timeout=15_000)


def test_browser_backtest_page_runs_and_draws_equity(runs, browser):
    page = browser["page"]
    tab(page, "Backtest")
    page.locator("select:visible").first.select_option(label="bundle: run-half/bundle")
    page.get_by_placeholder("bars.parquet or .csv").fill(str(runs / "market.parquet"))
    page.get_by_role("button", name="Run backtest").click()
    page.get_by_text("equity against the baselines, and drawdown (policy (bundle), buy & hold, SMA 20/100)").wait_for(
        timeout=30_000
    )
    assert page.locator("canvas:visible").count() >= 3  # equity, drawdown, trades: Bokeh draws on canvases
    expect(page.get_by_text(re.compile(r"^done: 2,881 bars .*; backtest, metrics and figures"))).to_be_visible()
    page.screenshot(path=SHOTS / "backtest.png", full_page=True)


def test_browser_loaded_nothing_from_outside_the_machine(browser):
    outside = [
        u
        for u in browser["requests"]
        if not u.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "blob:http://127.0.0.1:", "data:"))
    ]
    assert browser["requests"] and not outside, outside[:10]


def test_live_rows_show_the_risk_engine_gauges_and_active_rules_first():
    from intraday.dashboard import live_rows, risk_rows

    rules = [{"name": "dd-warn", "active": False, "fired": 0}, {"name": "dd-halt", "active": True, "fired": 2}]
    engine = {"metrics": {"drawdown": 0.0123, "var_historical": 12.5, "realized_vol": float("nan")}, "rules": rules}
    rows = risk_rows(engine)
    assert rows["risk drawdown"] == "0.0123" and rows["risk var_historical"] == "12.5"
    assert "risk realized_vol" not in rows  # not known yet: not shown as nan
    assert rows["risk rules"] == "dd-halt ACTIVE (fired 2), dd-warn clear (fired 0)"
    assert risk_rows(None) == {} and "risk rules" in live_rows({"risk_engine": engine})


def test_models_page_shows_the_registry_versions_with_aliases_and_the_last_gate(tmp_path):
    "Issue 26 with issue 21: champion and challenger from the MLflow registry, their lineage and the gate's decision."
    from intraday.dashboard import list_models, registry_models
    from intraday.registry import CHAMPION, Registry

    where = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "art"),
             "cache_dir": str(tmp_path / "cache"), "audit_trail": str(tmp_path / "trail.jsonl")}  # fmt: skip
    settings = load_settings(registry=where, train={"runs_dir": str(tmp_path / "runs")})  # [bundle]: the session keys
    assert registry_models(settings) is None and list_models(settings).empty  # nothing registered, no folders
    a, b = (fixed_bundle(tmp_path / "runs" / r / "bundle", "0,1", pick) for r, pick in (("a", 1), ("b", 0)))
    reg = Registry(settings.registry)  # its trust is read now: after the session's key signed the bundles
    first = reg.register(a, alias=CHAMPION)
    second = reg.register(b)
    name = first["name"]
    reg.record("refuse", name, tags={"champion_version": 1, "challenger_version": 2, "why": "p = 0.41 (needs < 0.05)"})
    df = list_models(settings)
    assert sorted(df.run) == [f"{name}/1", f"{name}/2"]
    rows = df.set_index("run")
    assert rows.loc[f"{name}/1", "alias"] == "champion" and rows.loc[f"{name}/2", "alias"] == "challenger"
    assert rows.loc[f"{name}/2", "gate"] == "refuse: p = 0.41 (needs < 0.05)" and rows.loc[f"{name}/1", "gate"] == ""
    assert rows.loc[f"{name}/2", "bundle"] == second["bundle_sha256"][:12]
    page = ModelsPage(settings)
    assert "champion" in page.table.object and "refuse: p = 0.41" in page.table.object
    for v in (1, 2):  # each version links to its page in MLflow's own UI, in a new tab
        assert f'<a href="http://127.0.0.1:5000/#/models/{name}/versions/{v}" target="_blank"' in page.table.object
    assert 'target="_blank" rel="noopener">http://127.0.0.1:5000</a>' in page.note.object
    page.show(f"registry:{name}/1")  # resolved, downloaded and verified, as the runner does
    assert "cannot load" not in page.detail.object and first["bundle_sha256"][:12] in page.detail.object


def test_live_card_draws_the_runners_latency_histograms_from_its_metrics():
    "The Live page's latency: read from a real ControlServer's /metrics, one histogram per stage with observations."
    from intraday.dashboard import RunnerCard, latency_bars

    mon = Monitor()
    for s in (0.0004, 0.0007, 0.002):
        mon.observe("decision", s)
        mon.observe("bar_to_ack", s * 10)
    with ControlServer(mon, state=lambda: {"trading_state": "ACTIVE"}, token=TOKEN) as server:
        card = RunnerCard(server.url, pn.widgets.PasswordInput())
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own: Playwright's may be running here
            pool.submit(asyncio.run, card.refresh()).result()
        titles = [f.title.text for f in card.latency.object.children]
        assert [t.split(" (")[0] for t in titles] == ["decision", "bar_to_ack"] and all("n=3" in t for t in titles)
        assert latency_bars(card.control.metrics(), stages=("fill",)) is None  # no fills observed: nothing drawn
