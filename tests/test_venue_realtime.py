"The venue's real-time clock (history re-based onto the wall clock, at a speed factor), pause/resume, and the CLI."

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import ccxt
import pytest
from conftest import ROOT
from procs import stderr_of

from intraday.binance import connect, serve
from intraday.cli import main
from intraday.data import synth_market
from intraday.venue import Venue

START = 100
KEY, SECRET = "paper-key-1", "paper-secret-1"  # the settings loader refuses secrets under 8 characters
SYM = "SYN/USDT"
BARS = synth_market(days=1, seed=1)
STEP = 60_000
SPEED = 6000.0  # 10 ms of wall clock per 1m bar


def wait_for(cond, timeout: float = 5.0) -> None:
    "Poll `cond()` until it is true."
    t = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t, "timed out"
        time.sleep(0.005)


def admin(url: str, path: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url + path, data=b"", method="POST"), timeout=5) as r:
        return json.loads(r.read())


def test_realtime_replay_is_rebased_and_advances(tmp_path):
    venue = Venue(BARS, start=START, keys={KEY: SECRET}, admin=True, speed=SPEED)
    t0 = time.time() * 1000
    url, stop = serve(venue)
    t1 = time.time() * 1000
    try:
        close = venue.ts[START] + STEP  # the bar current at start closed just before the server started
        assert t0 - STEP < close <= t1
        assert (venue.ts[0] - BARS.index[0].value // 10**6) % STEP == 0  # shifted by whole bars
        wait_for(lambda: venue.cursor >= START + 20)
        ex = connect(url, KEY, SECRET)
        rows = ex.fetch_ohlcv(SYM, "1m", limit=1000)
        i = len(rows) - 1  # the current bar when ccxt asked
        assert i >= START + 20 and [r[0] for r in rows] == list(venue.ts[: i + 1])
        assert rows[-1][1:] == pytest.approx(list(BARS.iloc[i]), abs=1e-8)  # the same bars, re-timed
        # never ahead of the replay time: the current bar has closed at speed x wall time since the start
        assert venue.ts[venue.cursor] + STEP <= close + SPEED * (time.time() * 1000 - t0) + STEP

        paused = admin(url, "/admin/pause")
        assert (paused["mode"], paused["paused"], paused["speed"]) == ("realtime", True, SPEED)
        time.sleep(0.1)  # 10 bars of replay, had it not been paused
        assert venue.cursor == paused["cursor"]
        assert admin(url, "/admin/resume")["paused"] is False
        wait_for(lambda: venue.cursor >= paused["cursor"] + 5)
        rows = ex.fetch_ohlcv(SYM, "1m", limit=1000)
        assert all(b[0] - a[0] == STEP for a, b in zip(rows, rows[1:]))  # no bar skipped across the pause
    finally:
        stop()


def test_watch_ohlcv_on_the_realtime_clock():
    venue = Venue(BARS, start=START, keys={KEY: SECRET}, speed=600.0)  # 100 ms per bar
    url, stop = serve(venue)

    async def watch():
        ex = connect(url, KEY, SECRET, pro=True)
        try:
            got = []
            while len(got) < 3:
                got += await asyncio.wait_for(ex.watch_ohlcv(SYM, "1m"), 5)
            return got
        finally:
            await ex.close()

    try:
        got = asyncio.run(watch())
    finally:
        stop()
    assert all(b[0] - a[0] == STEP for a, b in zip(got, got[1:]))
    for bar in got:
        i = int((bar[0] - venue.ts[0]) // STEP)
        assert venue.ts[i] == bar[0] and bar[1:] == pytest.approx(list(BARS.iloc[i]), abs=1e-8)


def test_cli_venue_serve_realtime_with_faults(tmp_path):
    profile = tmp_path / "faults.yaml"
    profile.write_text("seed: 1\nendpoints:\n  GET /api/v3/ticker/24hr:\n    5xx: 1.0\n")
    env = {**os.environ, "INTRADAY_SETTINGS": str(ROOT / "settings.ini"), "INTRADAY_API_KEY": KEY,
           "INTRADAY_API_SECRET": SECRET, "INTRADAY__DATA__DAYS": "1"}  # fmt: skip
    exe = str(Path(sys.executable).with_name("intraday"))
    args = [exe, "venue", "serve", "--port", "0", "--speed", "1", "--faults", str(profile), "--seed", "4"]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "paper venue for SYN/USDT (1,440 bars, current bar 100) on http://127.0.0.1:" in line, stderr_of(proc)
        url = line.rsplit(" on ", 1)[1].strip()
        info = proc.stdout.readline()
        assert "clock: real time x 1, latest bar" in info and f"faults: {profile} (seed 4)" in info
        ex = connect(url, KEY, SECRET)
        last = ex.fetch_ohlcv(SYM, "1m", limit=1)[-1][0]
        assert time.time() * 1000 - 2 * STEP < last + STEP <= time.time() * 1000  # the latest bar ended by now
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_ticker(SYM)
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_venue_serve_bad_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.setenv("INTRADAY_API_KEY", KEY)
    monkeypatch.setenv("INTRADAY_API_SECRET", SECRET)
    with pytest.raises(SystemExit):
        main(["venue", "serve", "--step", "--speed", "2"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["venue", "serve", "--speed", "0"]) == 2
    assert "--speed must be > 0" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"endpoints": {"/api/v3/order": {"teapot": 0.5}}}')
    assert main(["venue", "serve", "--faults", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad fault profile" in err and "bad.json" in err and "unknown key 'teapot'" in err


def serve_cli(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    "Start `intraday venue serve ARGS` on a free port; the process and its first line."
    env = {**os.environ, "INTRADAY_SETTINGS": str(ROOT / "settings.ini"), "INTRADAY_API_KEY": KEY,
           "INTRADAY_API_SECRET": SECRET, "INTRADAY__DATA__DAYS": "1"}  # fmt: skip
    exe = str(Path(sys.executable).with_name("intraday"))
    proc = subprocess.Popen([exe, "venue", "serve", "--port", "0", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    return proc, proc.stdout.readline()


def test_cli_venue_serve_symbol_defaults_to_the_files_own(tmp_path):
    from intraday.data import write_bars

    path = write_bars(BARS.iloc[:300], tmp_path / "btc.parquet", meta={"exchange": "binance", "symbol": "BTC/USDT"})
    write_bars(BARS.iloc[:300], tmp_path / "plain.csv")
    for args, want in ((["--data", str(path)], "BTC/USDT"), (["--data", str(path), "--symbol", "ETH/BTC"], "ETH/BTC"),
                       (["--data", str(tmp_path / "plain.csv")], "SYN/USDT")):  # fmt: skip
        proc, line = serve_cli(args, tmp_path)
        try:
            assert f"paper venue for {want} (300 bars, current bar 100) on http://127.0.0.1:" in line, stderr_of(proc)
            ex = connect(line.rsplit(" on ", 1)[1].strip(), KEY, SECRET)
            assert list(ex.load_markets()) == [want]
            assert len(ex.fetch_ohlcv(want, "1m", since=0, limit=1000)) == 101
        finally:
            proc.terminate()
            proc.wait(10)


def test_cli_venue_serve_bad_symbol(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.setenv("INTRADAY_API_KEY", KEY)
    monkeypatch.setenv("INTRADAY_API_SECRET", SECRET)
    assert main(["venue", "serve", "--symbol", "BTCUSDT"]) == 2
    assert "--symbol must be BASE/QUOTE (e.g. BTC/USDT), got 'BTCUSDT'" in capsys.readouterr().err
