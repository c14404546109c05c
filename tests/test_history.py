"""The ccxt history loader against the paper venue on 127.0.0.1, with the real ccxt.binance client."""

import pandas as pd
import pytest
from conftest import ROOT
from procs import stderr_of

from intraday.binance import connect, serve
from intraday.cli import main
from intraday.data import BarStore, fetch_history, synth_market
from intraday.venue import Venue

BARS = synth_market(days=1, seed=3)
START = pd.Timestamp("2024-01-01", tz="UTC")
KEY, SECRET = "paper-key-1", "paper-secret-1"  # the settings loader refuses secrets under 8 characters


@pytest.fixture
def venue():
    v = Venue(BARS, symbol="SYN/USDT", start=1400, keys={KEY: SECRET}, admin=True)
    url, stop = serve(v)
    yield v, url
    stop()


def test_what_is_stored_equals_what_the_venue_served(venue, tmp_path):
    v, url = venue
    store = BarStore(tmp_path)
    got = fetch_history(connect(url, KEY, SECRET), "SYN/USDT", "1m", START, store=store, exchange="venue", limit=500)
    served = BARS.iloc[:1401]  # bars up to the current replay bar
    assert len(got) == 1401
    pd.testing.assert_frame_equal(store.load("venue", "SYN/USDT", "1m"), served, check_freq=False)


def test_faults_mid_download_are_retried(venue, tmp_path):
    v, url = venue
    v.fault("/api/v3/klines", "5xx", count=2)
    v.fault("/api/v3/klines", "drop_response", count=1)
    store = BarStore(tmp_path)
    got = fetch_history(connect(url, KEY, SECRET), "SYN/USDT", "1m", START, store=store, exchange="venue",
                        limit=300, backoff=0.01)  # fmt: skip
    pd.testing.assert_frame_equal(got, BARS.iloc[:1401], check_freq=False)
    v.fault("/api/v3/klines", "5xx", count=10)
    with pytest.raises(RuntimeError, match="network error after 3 attempts"):
        fetch_history(connect(url, KEY, SECRET), "SYN/USDT", "1m", START, retries=3, backoff=0.01)


def test_resume_appends_without_duplicates(venue, tmp_path):
    v, url = venue
    store = BarStore(tmp_path)
    client = connect(url, KEY, SECRET)
    first = fetch_history(client, "SYN/USDT", "1m", START, until=BARS.index[700], store=store, exchange="venue")
    assert len(first) == 700
    v.step(20)  # the market moves on
    rest = fetch_history(client, "SYN/USDT", "1m", START, store=store, exchange="venue")
    assert rest.index[0] == BARS.index[700] and len(rest) == 1421 - 700
    pd.testing.assert_frame_equal(store.load("venue", "SYN/USDT", "1m"), BARS.iloc[:1421], check_freq=False)
    assert fetch_history(client, "SYN/USDT", "1m", START, store=store, exchange="venue").empty


def test_exchange_errors_stop_with_a_message(venue):
    _, url = venue
    with pytest.raises(RuntimeError, match="the exchange refused"):
        fetch_history(connect(url, KEY, SECRET), "SYN/USDT", "5m", START)


def test_cli_data_fetch(venue, tmp_path, monkeypatch, capsys):
    _, url = venue
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.setenv("INTRADAY_API_KEY", KEY)
    monkeypatch.setenv("INTRADAY_API_SECRET", SECRET)
    args = ["data", "fetch", "--exchange", "venue", "--symbol", "SYN/USDT", "--since", "2024-01-01", "--url", url]
    assert main(args) == 0
    assert "fetched 1,401 new 1m bars" in capsys.readouterr().out
    assert main(args) == 0 and "fetched 0 new" in capsys.readouterr().out
    assert main(["data", "fetch", "--exchange", "nowhere", "--symbol", "A/B", "--since", "2024-01-01"]) == 2
    basket = [
        "data",
        "fetch",
        "--exchange",
        "venue",
        "--symbols",
        "SYN/USDT,ETH/USDT",
        "--since",
        "2024-01-01",
        "--url",
        url,
    ]  # fmt: skip (the paper venue serves one symbol: the second is refused, named)
    assert main(basket) == 1
    out = capsys.readouterr()
    assert "fetched 0 new 1m bars of SYN/USDT" in out.out and "intraday: ETH/USDT:" in out.err
    assert main(["data", "fetch", "--since", "2024-01-01"]) == 2
    assert "needs --symbol (one) or --symbols" in capsys.readouterr().err


def test_cli_venue_serve_for_a_real_ccxt_client(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "INTRADAY_SETTINGS": str(ROOT / "settings.ini"), "INTRADAY_API_KEY": KEY,
           "INTRADAY_API_SECRET": SECRET, "INTRADAY__DATA__DAYS": "1"}  # fmt: skip
    exe = str(Path(sys.executable).with_name("intraday"))
    proc = subprocess.Popen([exe, "venue", "serve", "--port", "0", "--admin"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "paper venue for SYN/USDT (1,440 bars, current bar 100) on http://127.0.0.1:" in line, stderr_of(proc)
        url = line.rsplit(" on ", 1)[1].strip()
        ex = connect(url, KEY, SECRET)
        assert len(ex.fetch_ohlcv("SYN/USDT", "1m", since=0, limit=1000)) == 101
        assert ex.fetch_balance()["USDT"]["free"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
    no_keys = {k: v for k, v in env.items() if not k.startswith("INTRADAY_API")}
    r = subprocess.run([exe, "venue", "serve"], env=no_keys, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs credentials" in r.stderr


def test_update_refetches_a_hole_and_appends_what_closed_as_the_venue_moves_on(venue, tmp_path, monkeypatch, capsys):
    "The ingestion job on a store that grows: a hole refetched, each run appending the bars closed since the last."
    from intraday.data import update_history

    v, url = venue
    store, client = BarStore(tmp_path / "store"), connect(url, KEY, SECRET)
    fetch_history(client, "SYN/USDT", "1m", START, until=BARS.index[700], store=store, exchange="venue")
    held = store.load("venue", "SYN/USDT", "1m")
    store.save(held.drop(held.index[100:110]), "venue", "SYN/USDT", "1m")  # a hole of 10 bars
    v.step(20)
    up = update_history(client, "SYN/USDT", "1m", store, "venue")
    assert (up["backfilled"], up["new"], up["gaps"], up["bars"]) == (10, 1421 - 700, 0, 1421)
    pd.testing.assert_frame_equal(store.load("venue", "SYN/USDT", "1m"), BARS.iloc[:1421], check_freq=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.setenv("INTRADAY__DATA__STORE", str(tmp_path / "store"))
    for _ in range(2):  # the CronJob, twice, while the market moves on
        v.step(5)
        assert main(["data", "update", "--exchange", "venue", "--symbol", "SYN/USDT", "--url", url]) == 0
        assert "5 new closed bar(s), 0 backfilled; no gap" in capsys.readouterr().out
    assert len(store.load("venue", "SYN/USDT", "1m")) == 1431
    assert main(["data", "update", "--exchange", "venue", "--symbol", "ETH/USDT", "--url", url]) == 1
    assert "no bars stored for venue ETH/USDT 1m: start the history" in capsys.readouterr().err
