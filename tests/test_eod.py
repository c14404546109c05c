"""End of day (issue 21 deliverable 6): the statement and transaction report of a session on the paper venue agree with
the venue's own ledger; the closing position and the statement's hash are chained into the audit trail."""

import asyncio
import csv
import hashlib
import json
from datetime import UTC, datetime

import pytest
from test_unattended import BARS, KEY, REAL, SECRET, router_for

from intraday.binance import serve
from intraday.eod import RTS_FIELDS, TX_COLUMNS, write_eod
from intraday.journal import Journal
from intraday.risk import Intent
from intraday.trail import Trail, verify
from intraday.venue import Venue


def test_a_days_statement_and_transactions_match_the_venues_ledger(tmp_path):
    venue = Venue(BARS, start=1500, admin=True, keys={KEY: SECRET}, spec=REAL,
                  balances={"USDT": 10_000.0, "SYN": 0.0})  # fmt: skip
    url, stop = serve(venue)

    async def session():
        router = router_for(url, tmp_path / "state")
        await router.start()
        router.last_price = venue.last
        for side, qty in (("buy", 10.0), ("sell", 4.0), ("buy", 1.5), ("sell", 1_000.0)):  # the last: too much
            od = await router.submit(Intent(side, qty, tag=f"bar {venue.now} model cafe01"))
            venue.step()
            await router.sync(od)
        await router.reconcile()
        await router.ex.close()

    asyncio.run(session())
    ledger = venue.ledger()
    stop()
    journal = Journal.open(tmp_path / "state")
    day = datetime.now(UTC).date().isoformat()
    trail = Trail(tmp_path / "trail.jsonl")
    st = write_eod(journal, day, tmp_path / "eod", mark=ledger["last"], trail=trail)
    fills = ledger["trades"]
    assert st["position_close"] == pytest.approx(ledger["balances"]["SYN"]["total"])
    assert st["fills"] == len(fills) == 3
    assert st["fees"] == pytest.approx(sum(t["commission"] for t in fills))
    assert st["orders"] == {"FILLED": 3, "REJECTED": 1}, st["orders"]  # the oversized sell: the venue refused it
    assert st["refused"][0]["status"] == "REJECTED" and st["refused"][0]["reason"]
    assert set(st["by_model"]) == {"cafe01"} and st["by_model"]["cafe01"]["fills"] == 3
    with open(st["files"]["transactions"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(TX_COLUMNS) and set(RTS_FIELDS) <= set(TX_COLUMNS)
    got = [(r["side"], float(r["quantity"]), float(r["price"]), r["trade_id"]) for r in rows if r["record"] == "fill"]
    want = [("buy" if t["isBuyer"] else "sell", t["qty"], t["price"], str(t["id"])) for t in fills]
    assert [g[::3] for g in got] == [w[::3] for w in want]  # every venue trade once, in order, with its id (RTS 22: 3)
    rounded = pytest.approx([x for w in want for x in w[1:3]], rel=1e-9)  # the wire's 8 decimals
    assert [x for g in got for x in g[1:3]] == rounded
    assert all(r["time_utc"].endswith("Z") and len(r["time_utc"].split(".")[1]) == 7 for r in rows)  # microseconds
    assert all(r["algorithm"] == "cafe01" for r in rows)
    assert verify(trail.path) == (1, None)
    saved = tmp_path / "eod" / f"statement-{day}.json"  # what the chain holds: the file as written
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == trail.records()[-1]["data"]["statement_sha256"]
    assert json.loads(saved.read_text())["position_close"] == trail.records()[-1]["data"]["position"]


def test_retention_never_removes_a_run_a_registered_version_came_from(tmp_path):
    "Old run folders go; the one a registered version's bundle came from stays, and the registry still resolves it."
    import os
    import time

    from test_unattended import fixed_bundle

    from intraday.config import RegistrySettings
    from intraday.eod import prune_runs, registered_sources
    from intraday.registry import CHAMPION, Registry

    runs = tmp_path / "runs"
    registered = fixed_bundle(runs / "20240101-ppo" / "bundle", "0,1", 1)
    fixed_bundle(runs / "20240102-ppo" / "bundle", "0,1", 0)
    (runs / "20261203-ppo").mkdir()
    for name, age in (("20240101-ppo", 300), ("20240102-ppo", 200), ("20261203-ppo", 1)):
        os.utime(runs / name, (time.time() - age * 86400,) * 2)
    where = {
        "artifact_root": tmp_path / "art",
        "cache_dir": tmp_path / "cache",
        "audit_trail": tmp_path / "trail.jsonl",
    }
    reg = Registry(
        RegistrySettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", **{k: str(v) for k, v in where.items()})
    )
    done = reg.register(registered, alias=CHAMPION)
    keep = registered_sources(reg)
    assert keep == {(runs / "20240101-ppo").resolve()}
    assert [p.name for p in prune_runs(runs, 30, keep)] == ["20240102-ppo"]
    assert sorted(p.name for p in runs.iterdir()) == ["20240101-ppo", "20261203-ppo"]
    mv, path = reg.resolve(f"{done['name']}@champion")
    assert int(mv.version) == 1 and (path / "manifest.json").is_file()


def test_the_eod_command_writes_the_day_and_prunes_nothing_registered(tmp_path, capsys, monkeypatch):
    "`intraday eod` on a state directory: the files, the summary line, the audit link; a bad state dir is one line."
    from intraday.cli import main
    from intraday.orders import OrderEvent

    monkeypatch.setenv("INTRADAY__REGISTRY__TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("INTRADAY__TRAIN__RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("INTRADAY__REGISTRY__AUDIT_TRAIL", str(tmp_path / "trail.jsonl"))
    j = Journal(tmp_path / "state", runner="r1")
    od = j.new_order("SYN/USDT", "buy", "market", 2.0, then=OrderEvent.SUBMIT, tag="bar 1 model abc")
    j.transition(od, OrderEvent.ACCEPT, exchange_id="9")
    j.fill(od, "t9", 2.0, 50.0, 0.05)
    j.close()
    day = datetime.now(UTC).date().isoformat()
    args = ["eod", "--state-dir", str(tmp_path / "state"), "--day", day, "--prune-days", "30"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"eod {day} (paper/r1): position 0 -> 2, realised 0.00, fees 0.05, 1 fill(s)" in out
    assert (tmp_path / "state" / "eod" / f"transactions-{day}.csv").is_file() and "pruned 0 run folder(s)" in out
    assert main(args) == 0  # the day is written (by the runner at its roll, or here): left as it is
    assert f"eod {day}: already written (" in capsys.readouterr().out
    assert [r["kind"] for r in Trail(tmp_path / "trail.jsonl").records()] == ["eod"]  # one record for the day
    assert main([*args, "--force", "--anchor"]) == 0
    out = capsys.readouterr().out
    assert "position 0 -> 2" in out and "anchored the audit trail's head: seq 2" in out
    assert main(["eod", "--state-dir", str(tmp_path / "nowhere"), "--day", day]) == 1
    assert "no journal here" in capsys.readouterr().err
