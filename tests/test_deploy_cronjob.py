"The training CronJob's command, run on this machine as the manifest writes it, in the pod's directory layout."

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from deploy_layout import ROOT, TINY, command, layout

from intraday.bundle import verify_bundle

BIN = Path(sys.executable).parent


def run(cmd: list[str], app: Path) -> subprocess.CompletedProcess:
    exe = [str(BIN / cmd[0]), *cmd[1:]]  # `papermill` of this environment
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INTRADAY_SETTINGS": str(app / "settings.ini")}
    return subprocess.run(exe, cwd=app, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_cronjob_command_produces_the_run(tmp_path):
    app = tmp_path / "app"
    mounts = layout(app)
    reports = mounts["/app/reports"]
    r = run(command("intraday-train-29000000") + TINY, app)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Executing notebook with kernel" in r.stderr and "bundle:" in r.stderr + r.stdout  # --log-output
    nb = nbformat.read(reports / "intraday-train-29000000.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["run_id"] == "intraday-train-29000000"
    assert nb.metadata["papermill"]["parameters"]["total_timesteps"] == 2000
    run_dir = reports / "runs" / "intraday-train-29000000"
    assert verify_bundle(run_dir / "bundle") == []
    assert (run_dir / "report.html").stat().st_size > 10_000
    release = [o.get("text", "") for c in nb.cells if c.cell_type == "code" and "job.release()" in c.source
               for o in c.get("outputs", [])]  # fmt: skip
    assert "'decision': 'registered'" in "".join(release) and "has no champion yet" in "".join(release)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_timesteps"] >= 2000 and Path(metrics["bundle"]) == Path(
        "reports/runs/intraday-train-29000000/bundle"
    )
    # the ConfigMap's restarts: 3 training seeds, one kept, the bundle naming it
    kept = [r["seed"] for r in metrics["restarts"] if r["chosen"]]
    assert len(metrics["restarts"]) == 3 and len(kept) == 1
    assert json.loads((run_dir / "bundle" / "manifest.json").read_text())["seed"] == kept[0]


@pytest.mark.slow
def test_failing_cell_fails_the_job(tmp_path):
    app = tmp_path / "app"
    reports = layout(app)["/app/reports"]
    r = run(command("intraday-train-bad") + ["-p", "algorithm", "NOPE"], app)
    assert r.returncode == 1, r.stderr[-2000:]  # the pod exits 1, so the Job (backoffLimit 0) fails
    assert "PapermillExecutionError" in r.stderr or "Exception encountered" in r.stderr
    nb = nbformat.read(reports / "intraday-train-bad.ipynb", as_version=4)  # the record, with the error in it
    assert any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert not (reports / "runs" / "intraday-train-bad" / "bundle").exists()
