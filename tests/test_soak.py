"""The soak harness, short: one simulated day (1,440 bars) of the real CLI runner against the real paper venue, with
faults, a hot swap, kill -9s, a full state directory, a corrupted journal page, a venue restart and /kill under
hanging cancels (tests/soak/soak.py; the full three-day run is `python -m tests.soak`, a benchmark, not a test); then
half a day of the same on a basket of three symbols on one account (tests/soak/basket.py), audited per symbol."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _soak(tmp_path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    "Run the harness with `args`; its summary and the process."
    out = tmp_path / "soak"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "soak" / "soak.py"), *args, "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    print(p.stdout[-6000:])
    summary = out / "summary.json"
    assert summary.is_file(), f"the harness wrote no summary (exit {p.returncode}): {p.stderr[-3000:]}"
    return json.loads(summary.read_text()), p


def _crashes(s: dict) -> list:
    return [(c["runner"], c["bar"], (c["traceback"] or c.get("last_stderr") or ["?"])[-1]) for c in s["crash_list"]]


@pytest.mark.slow
def test_a_simulated_day_of_faults_kills_and_restarts_loses_nothing(tmp_path):
    s, p = _soak(tmp_path, "--short")
    assert s["bars"] >= 1440 and s["decisions"] > 0 and s["orders"] > 0
    assert s["kills"] >= 3 and s["faults"] > 0 and s["swaps"].get("accepted", 0) >= 1
    assert (s["duplicates"], s["lost"], s["mismatches"]) == (0, 0, 0), s["audits"]
    assert s["crashes"] == 0, _crashes(s)
    assert p.returncode == 0


@pytest.mark.slow
def test_a_basket_half_day_of_faults_kills_and_restarts_loses_nothing(tmp_path):
    "The basket runner under the same faults: every symbol's journal audited against the venue's ledger."
    s, p = _soak(tmp_path, "--basket", "--bars", "720", "--kills", "2", "--step-s", "0.15")
    assert s["bars"] >= 720 and s["decisions"] > 0 and s["orders"] > 0 and s["kills"] >= 2 and s["faults"] > 0
    assert {a["symbol"] for a in s["audits"]} == {"AAA/USDT", "BBB/USDT", "CCC/USDT"}
    assert (s["duplicates"], s["lost"], s["mismatches"]) == (0, 0, 0), s["audits"]
    assert s["corrupted_journal"] == "refused" and "mismatch" in (s["venue_restart_halt"] or "")
    # a mismatch is designed only at the venue restart (not in halts_seen): any other is the books falling behind
    assert not [h for h in s["halts_seen"] if "mismatch" in (h["reason"] or "")], s["halts_seen"]
    assert s["crashes"] == 0, _crashes(s)
    assert p.returncode == 0
