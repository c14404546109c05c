"""The soak harness, short: one simulated day (1,440 bars) of the real CLI runner against the real paper venue, with
faults, a hot swap, kill -9s, a full state directory, a corrupted journal page, a venue restart and /kill under
hanging cancels (tests/soak/soak.py; the full three-day run is `python -m tests.soak`, a benchmark, not a test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_simulated_day_of_faults_kills_and_restarts_loses_nothing(tmp_path):
    out = tmp_path / "soak"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "soak" / "soak.py"), "--short", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    print(p.stdout[-6000:])
    summary = out / "summary.json"
    assert summary.is_file(), f"the harness wrote no summary (exit {p.returncode}): {p.stderr[-3000:]}"
    s = json.loads(summary.read_text())
    crashes = [(c["runner"], c["bar"], (c["traceback"] or c.get("last_stderr") or ["?"])[-1]) for c in s["crash_list"]]
    assert s["bars"] >= 1440 and s["decisions"] > 0 and s["orders"] > 0
    assert s["kills"] >= 3 and s["faults"] > 0 and s["swaps"].get("accepted", 0) >= 1
    assert (s["duplicates"], s["lost"], s["mismatches"]) == (0, 0, 0), s["audits"]
    assert s["crashes"] == 0, crashes
    assert p.returncode == 0
