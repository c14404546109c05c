"""Issue 21, the lifecycle's UI: `intraday ui` serves MLflow's own web UI on 127.0.0.1 against the settings' store;
Debian's Chromium (Playwright, no browser download) finds a registered bundle's run in its experiment and the
registered model with its version and alias, and loads nothing from outside the machine."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_unattended import fixed_bundle

from intraday.config import load_settings
from intraday.registry import CHAMPION, Registry

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports" / "mlflow-ui"
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    "A registered bundle (its register run, the model's version 1 as champion) and `intraday ui` serving the store."
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing at /usr/bin/chromium (.ci/run installs it: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("mlflow-ui")
    where = {"tracking_uri": f"sqlite:///{tmp}/mlflow.db", "artifact_root": str(tmp / "mlartifacts"),
             "cache_dir": str(tmp / "cache"), "audit_trail": str(tmp / "trail.jsonl")}  # fmt: skip
    env = {**os.environ, **{f"INTRADAY__REGISTRY__{k.upper()}": v for k, v in where.items()}}
    bundle = fixed_bundle(tmp / "run-long" / "bundle", "0,1", 1)  # signed with the session's key (tests/conftest.py)
    reg = Registry(load_settings(registry=where).registry)  # its trust is read now: after the key signed the bundle
    out = reg.register(bundle, alias=CHAMPION)
    port = free_port()
    exe = str(Path(sys.executable).parent / "intraday")
    log = tmp / "ui.log"  # a file, not a pipe: the server's access log would fill a pipe nobody reads
    proc = subprocess.Popen([exe, "ui", "--port", str(port)], env=env, cwd=tmp, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.read().strip() == b"OK":
                        break
            except OSError:
                pass
            assert time.time() < end, "intraday ui did not answer /health within 90 s"
            time.sleep(0.3)
        yield {"url": url, "port": port, "run_id": out["run_id"], "name": out["name"], "reg": reg, "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser(served):
    "One Chromium page; every request it makes is recorded."
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        yield {"page": page, "requests": requests}
        b.close()


def test_the_ui_shows_the_run_in_its_experiment(served, browser):
    page, reg = browser["page"], served["reg"]
    run = reg.client.get_run(served["run_id"])
    page.goto(f"{served['url']}/#/experiments/{run.info.experiment_id}/runs")  # its runs (not the GenAI overview)
    page.get_by_text(run.info.run_name).first.wait_for(timeout=60_000)  # "register syn-usdt_1m_ppo"
    page.get_by_text("intraday", exact=True).first.wait_for()  # the experiment's name
    page.screenshot(path=SHOTS / "experiment.png", full_page=True)
    page.goto(f"{served['url']}/#/experiments/{run.info.experiment_id}/runs/{served['run_id']}")
    page.get_by_text(run.info.run_name).first.wait_for(timeout=30_000)
    page.get_by_text(run.data.tags["bundle_sha256"]).first.wait_for(timeout=30_000)  # the lineage tags
    page.screenshot(path=SHOTS / "run.png", full_page=True)


def test_the_ui_shows_the_registered_model_with_its_version_and_alias(served, browser):
    page, name = browser["page"], served["name"]
    page.goto(f"{served['url']}/#/models")
    page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("Version 1").first.wait_for(timeout=30_000)  # latest version, and the champion's
    page.keyboard.press("Escape")  # MLflow's own "new model registry UI" announcement, once per browser
    page.screenshot(path=SHOTS / "models.png", full_page=True)
    page.goto(f"{served['url']}/#/models/{name}")  # the model: its versions with aliases
    page.get_by_text("Version 1").first.wait_for(timeout=30_000)
    page.get_by_text(f"@ {CHAMPION}").first.wait_for(timeout=30_000)
    page.screenshot(path=SHOTS / "model.png", full_page=True)


def test_the_ui_loaded_nothing_from_outside_the_machine(served, browser):
    local = (f"http://127.0.0.1:{served['port']}/", f"ws://127.0.0.1:{served['port']}/", "data:", "blob:")
    outside = [u for u in browser["requests"] if not u.startswith(local)]
    assert browser["requests"] and not outside, outside[:10]
