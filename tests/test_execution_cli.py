"""`intraday live kill|resume|status` on a real state directory, and the kill file honoured by a real router."""

import asyncio
import subprocess
import sys
from pathlib import Path

from intraday.binance import connect, serve
from intraday.cli import main
from intraday.control import StateLock
from intraday.data import synth_market
from intraday.journal import Journal
from intraday.orders import OrderStatus
from intraday.risk import Intent, TradingState
from intraday.router import Router
from intraday.venue import Venue


def intraday(*args):
    "The installed console script, as an operator runs it."
    exe = Path(sys.executable).parent / "intraday"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def cli(capsys, *args):
    "The same command in-process: (exit code, stdout, stderr)."
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_kill_status_resume_round_trip(tmp_path, capsys):
    venue = Venue(synth_market(days=1, seed=2), start=100, admin=True, keys={"k": "s"})
    url, stop = serve(venue)
    state = tmp_path / "state"
    try:

        async def session():
            r = Router(connect(url, "k", "s", asynchronous=True), Journal(state, runner="c"), "SYN/USDT")
            await r.start()
            od = await r.submit(Intent("buy", 1.0, "limit", round(venue.last * 0.98, 2)))
            assert od.status == OrderStatus.OPEN
            p = intraday("live", "kill", "--state-dir", str(state), "--reason", "desk says stop")
            assert p.returncode == 0 and "kill file written" in p.stdout
            assert await r.check_kill_file()
            assert od.status == OrderStatus.CANCELED and r.risk.state == TradingState.HALTED
            assert not await r.check_kill_file()  # killed once, not again
            await r.ex.close()
            r.journal.close()

        asyncio.run(session())
        code, out, err = cli(capsys, "live", "status", "--state-dir", str(state))
        assert code == 0, err
        assert "HALTED (killed: desk says stop)" in out and "kill file      present" in out
        assert "CANCELED 1" in out and "live orders    none" in out and "reconciled" in out
        with StateLock(state):  # a runner holds the directory: resume must go through it
            code, out, err = cli(capsys, "live", "resume", "--state-dir", str(state))
            assert code == 1 and "POST /resume" in err
        code, out, err = cli(capsys, "live", "resume", "--state-dir", str(state))
        assert code == 0 and "trading state ACTIVE" in out

        async def restarted():
            r = Router(connect(url, "k", "s", asynchronous=True), Journal(state, runner="c"), "SYN/USDT")
            await r.start()
            assert r.risk.state == TradingState.ACTIVE and not r.kill_file.exists()
            assert (await r.submit(Intent("buy", 1.0))).status == OrderStatus.OPEN
            await r.ex.close()

        asyncio.run(restarted())
    finally:
        stop()
    code, out, err = cli(capsys, "live", "status", "--state-dir", str(tmp_path / "empty"))
    assert code == 1 and "no journal here" in err


def test_live_run_refuses_clearly(tmp_path, capsys, monkeypatch):
    venue = Venue(synth_market(days=1, seed=2), start=100, keys={"right-key": "right-secret-123"})
    url, stop = serve(venue)
    try:
        code, _, err = cli(capsys, "live", "--url", url)
        assert code == 2 and "needs --bundle" in err
        code, _, err = cli(capsys, "live", "--bundle", str(tmp_path), "--venue", "binance")
        assert code == 2 and "add --live" in err
        monkeypatch.delenv("INTRADAY_API_KEY", raising=False)
        monkeypatch.delenv("INTRADAY_SECRETS_FILE", raising=False)
        code, _, err = cli(capsys, "live", "--bundle", str(tmp_path), "--url", url)
        assert code == 2 and "INTRADAY_API_KEY" in err
        monkeypatch.setenv("INTRADAY_API_KEY", "wrong-key-456")
        monkeypatch.setenv("INTRADAY_API_SECRET", "wrong-secret-789")
        code, _, err = cli(capsys, "live", "--bundle", str(tmp_path), "--url", url, "--state-dir", str(tmp_path / "s"))
        assert code == 1 and "reconciliation could not complete (AuthenticationError" in err
    finally:
        stop()
