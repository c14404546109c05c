"""Issue 21, experiment tracking: every backtest, training run and tuning trial is an MLflow run of its kind's
experiment in a real SQLite-backed store (tests/conftest.py's, or the test's own); a store that cannot be reached is
one line on stderr, never a traceback, and the work's own outputs stay."""

import json
import socket

from test_trainjob import job_args
from test_unattended import BARS, fixed_bundle

from intraday.cli import main
from intraday.config import load_settings
from intraday.data import write_bars
from intraday.registry import OUTCOME_FILE, mlflow_module, tracking_uri


def client():
    "A client of the store the environment names (the session's, tests/conftest.py)."
    return mlflow_module().MlflowClient(tracking_uri(load_settings().registry))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the socket is: nothing listens there


def backtest_args(tmp_path) -> list[str]:
    bundle = tmp_path / "run-long" / "bundle"
    if not bundle.is_dir():
        fixed_bundle(bundle, "0,1", 1)  # always long: a real signed bundle, no training
        write_bars(BARS, tmp_path / "bars.parquet", {"symbol": "SYN/USDT"})
    return ["backtest", "--bundle", str(bundle), "--data", str(tmp_path / "bars.parquet"),
            "--report", str(tmp_path / "report.html")]  # fmt: skip


def test_a_backtest_is_a_run_with_its_numbers_lineage_and_report(tmp_path, capsys):
    assert main(backtest_args(tmp_path)) == 0
    out = capsys.readouterr().out
    rid = out.split("tracked: run ")[1].split()[0]
    c = client()
    run = c.get_run(rid)
    assert c.get_experiment(run.info.experiment_id).name == "intraday-backtest"
    assert run.info.run_name == "run-long/bundle on bars.parquet" and run.info.status == "FINISHED"
    manifest = json.loads((tmp_path / "run-long" / "bundle" / "manifest.json").read_text())
    assert run.data.tags["bundle_sha256"] == manifest["policy_sha256"] and len(run.data.tags["data_hash"]) == 64
    assert {"policy.sharpe", "buy and hold.total_return", "SMA 20/100.max_drawdown"} <= set(run.data.metrics)
    assert 0 < int(run.data.params["bars"]) < len(BARS) and run.data.params["end"] == BARS.index[-1].isoformat()
    assert [f.path for f in c.list_artifacts(rid, "report")] == ["report/report.html"]


def test_an_unreachable_tracking_server_is_one_line_and_the_outputs_stay(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INTRADAY__REGISTRY__TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    assert main(backtest_args(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert (tmp_path / "report.html").stat().st_size > 10_000 and "tracked:" not in out
    assert err.count("\n") == 1 and err.startswith("intraday: tracking: the backtest run 'run-long/bundle on ")
    assert "Traceback" not in err and "(its outputs are kept)" in err
    # a training run (the supervised learner: no agent to train) publishes its bundle and says so in its folder
    args = job_args(tmp_path, "sup", "-p", "learner", "supervised", "-p", "market", "flow", "-p", "alpha", "0.5")
    assert main(["train", "--direct", *args]) == 0
    run = tmp_path / "runs" / "sup"
    out, err = capsys.readouterr()
    assert (run / "bundle" / "manifest.json").is_file() and "bundle:" in out
    lines = [ln for ln in err.splitlines() if "tracking" in ln]
    assert len(lines) == 2 and lines[0] == lines[1] and "Traceback" not in err  # the job's line, then the CLI's
    assert json.loads((run / OUTCOME_FILE).read_text())["error"] == lines[0]


def test_a_direct_training_run_is_tracked_with_settings_metrics_history_and_record(tmp_path, capsys):
    args = job_args(tmp_path, "sup-ok", "-p", "learner", "supervised", "-p", "market", "flow", "-p", "alpha", "0.5")
    assert main(["train", "--direct", *args]) == 0
    run_dir = tmp_path / "runs" / "sup-ok"
    outcome = json.loads((run_dir / OUTCOME_FILE).read_text())
    assert f"tracked:  run {outcome['run_id']} (intraday-train at sqlite:///" in capsys.readouterr().out
    c = client()
    run = c.get_run(outcome["run_id"])
    assert (run.data.params["job.learner"], run.data.params["job.market"], run.data.params["env.episode_len"]) == (
        "supervised", "flow", "240")  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test.sharpe"] == metrics["test"]["sharpe"]
    assert len(c.get_metric_history(run.info.run_id, "history.val_loss")) == len(metrics["history"])
    assert run.data.tags["data_hash"] == json.loads((run_dir / "lineage.json").read_text())["data_hash"]
    assert sorted(f.path for f in c.list_artifacts(run.info.run_id, "run")) == [
        "run/config.json", "run/lineage.json", "run/metrics.json", "run/report.html"]  # fmt: skip


def test_processes_tracking_into_a_new_sqlite_store_at_once_all_land(tmp_path):
    "Three processes (tuning workers on a fresh workbench) open one new SQLite store at once: each run is logged."
    import subprocess
    import sys

    code = f"""
from intraday.config import RegistrySettings
from intraday.registry import track
s = RegistrySettings(tracking_uri="sqlite:///{tmp_path}/mlflow.db", artifact_root="{tmp_path}/art",
                     audit_trail="{tmp_path}/trail.jsonl")
print(track("tune", "trial", params={{"a": 1}}, metrics={{"m": 1.0}}, settings=s))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(len(o.strip()) == 32 and not e.strip() for o, e in outs), outs  # three run ids, no error line
