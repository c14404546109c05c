import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from test_data import write_bad_frame

from intraday.cli import main
from intraday.data import BarStore, read_bars, read_parquet_meta


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    "Run each command from a scratch folder with the shipped settings and a clean environment."
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    for var in ("INTRADAY_API_KEY", "INTRADAY_API_SECRET", "INTRADAY_SECRETS_FILE"):
        monkeypatch.delenv(var, raising=False)


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_config_show_table_and_json_hide_secrets(capsys, monkeypatch):
    monkeypatch.setenv("INTRADAY_API_SECRET", "top-secret-value")
    monkeypatch.setenv("INTRADAY__DATA__DAYS", "12")
    code, out, err = run(capsys, "config", "show")
    assert code == 0
    assert "data.days" in out and "12" in out and "# env INTRADAY__DATA__DAYS" in out
    assert "secrets.api_secret" in out and "set" in out
    code, out, _ = run(capsys, "config", "show", "--json")
    shown = json.loads(out)
    assert shown["data"]["days"] == 12 and shown["secrets"] == {"api_key": "unset", "api_secret": "set"}
    assert "top-secret-value" not in out + err


def test_bad_settings_exit_2_naming_key(capsys, monkeypatch):
    monkeypatch.setenv("INTRADAY__DATA__TIMEFRAME", "7x")
    code, out, err = run(capsys, "config", "show")
    assert code == 2 and "data.timeframe = '7x'" in err and out == ""


def test_data_synth_check_info(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "synth", "--days", "2", "--seed", "3", "--alpha", "0", "--out", "b.parquet")
    assert code == 0 and "wrote 2,880 1m bars of SYN/USDT (seed 3, alpha 0.0)" in out
    meta = read_parquet_meta(tmp_path / "b.parquet")
    assert meta["seed"] == 3 and meta["alpha"] == 0.0 and meta["timeframe"] == "1m"
    code, out, _ = run(capsys, "data", "check", "b.parquet")
    assert code == 0 and out.startswith("OK b.parquet: 2,880 bars") and "0 gap(s)" in out
    code, out, _ = run(capsys, "data", "info", "b.parquet")
    assert code == 0 and "valid        yes" in out and "1m (inferred)" in out and "excess kurtosis" in out
    code, out, _ = run(capsys, "data", "synth", "--days", "1", "--timeframe", "5m", "--out", "b.csv")
    assert code == 0 and len(read_bars(tmp_path / "b.csv", validate=True)) == 288


def test_data_synth_into_store(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "synth", "--days", "1", "--symbol", "ABC/USD")
    assert code == 0
    store = BarStore(tmp_path / "data" / "store")
    assert store.keys() == [("synthetic", "ABC/USD", "1m")]
    assert len(store.load("synthetic", "ABC/USD", "1m")) == 1440


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_data_check_reports_each_problem_and_exits_1(capsys, tmp_path, month, suffix):
    "Acceptance: one duplicate timestamp, one NaN close and one bar with high < low: exit 1, all three reported."
    bad = write_bad_frame(month)
    path = tmp_path / f"bad{suffix}"
    bad.to_csv(path) if suffix == ".csv" else bad.to_parquet(path)
    code, out, err = run(capsys, "data", "check", str(path))
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert "row 10" in lines[0] and "duplicate timestamp" in lines[0]
    assert "row 20" in lines[1] and "close: NaN" in lines[1]
    assert "row 30" in lines[2] and "high < low" in lines[2]
    assert "3 problem(s)" in err
    code, out, _ = run(capsys, "data", "info", str(path))
    assert code == 0 and "NO: 3 problem(s)" in out


def test_unreadable_file_is_one_line_exit_1(capsys, tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"garbage")
    code, out, err = run(capsys, "data", "check", "x.parquet")
    assert code == 1 and err.startswith("intraday: x.parquet: cannot read as parquet") and len(err.splitlines()) == 1
    code, _, err = run(capsys, "data", "info", "missing.csv")
    assert code == 1 and "no such file" in err


def test_demo_runs_the_research_flow(capsys, tmp_path, monkeypatch):
    for key, value in {"DATA__DAYS": "12", "ENV__EPISODE_LEN": "240", "TRAIN__N_ENVS": "4", "TRAIN__N_STEPS": "128",
                       "TRAIN__BATCH_SIZE": "128", "TRAIN__EVAL_EVERY": "1024"}.items():  # fmt: skip
        monkeypatch.setenv(f"INTRADAY__{key}", value)
    stale = tmp_path / "demo" / "runs" / "demo" / "bundle"  # what an earlier run leaves: it made a second run fail
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")
    code, out, _ = run(capsys, "demo", "--out", "demo", "--timesteps", "2048", "--audit-timesteps", "1024")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # replaced whole: nothing set aside is left
    table = out[out.index("5/5 summary") :].splitlines()
    assert "95 % interval" in table[1] and table[2].startswith("planted-signal oracle")  # the oracle leads
    assert [r.split()[0] for r in table[3:5]] == ["policy", "supervised"]
    market = (tmp_path / "demo" / "market.html").read_text()
    assert market.count("Plotly.newPlot") == 1 and "candlestick" in market
    report = (tmp_path / "demo" / "report.html").read_text()
    assert report.count("Plotly.newPlot") == 6 and "leakage audit" in report and "policy bundle" in report
    assert "one window, the same for every strategy" in report and "strategies and their rules" in report
    assert "flat at the end of every 240-bar episode" in report and "metrics at export" in report
    assert "policy: price, position and trades" in report  # the agent's trades drawn, not the oracle's
    for name in ("policy", "buy & hold", "SMA 20/100"):
        assert name in out
    assert "audit causality" in out and "PASS: ret_1 shifted one bar ahead flagged by causality" in out
    assert "report: demo/report.html" in out
    assert len(read_bars(tmp_path / "demo" / "market.parquet", validate=True)) == 12 * 1440
    bundle = tmp_path / "demo" / "runs" / "demo" / "bundle"
    code, out, _ = run(capsys, "backtest", "--bundle", str(bundle), "--data", "demo/market.parquet",
                       "--report", "bt.html", "--start", "2024-01-10")  # fmt: skip
    assert code == 0 and "net Sharpe" in out and (tmp_path / "bt.html").is_file()


def test_log_file_gets_json_at_settings_level(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("INTRADAY__OBS__LOG_FILE", str(tmp_path / "run.log"))
    code, _, err = run(capsys, "data", "synth", "--days", "1", "--out", "b.parquet")
    from loguru import logger

    logger.complete()
    assert code == 0 and err == ""
    rec = json.loads((tmp_path / "run.log").read_text().splitlines()[-1])["record"]
    assert rec["message"] == "wrote synthetic bars" and rec["extra"]["bars"] == 1440
    assert np.isfinite(rec["elapsed"]["seconds"])


def test_data_info_into_a_closed_pipe_exits_quietly(capsys, tmp_path):
    "`intraday data info FILE | head` with the reader gone: no BrokenPipeError traceback, the SIGPIPE exit code."
    import os
    import subprocess
    import sys
    from pathlib import Path

    assert run(capsys, "data", "synth", "--days", "1", "--out", "b.parquet")[0] == 0
    exe = str(Path(sys.executable).with_name("intraday"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r, w = os.pipe()
    os.close(r)  # a real pipe whose reader has already gone, as when `head` has read its lines
    try:
        p = subprocess.run([exe, "data", "info", "b.parquet"], stdout=w, stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 141 and p.stderr == b"", p.stderr.decode()
    shell = subprocess.run(["bash", "-c", f"set -o pipefail; '{exe}' data info b.parquet | head -n 2"],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert len(shell.stdout.splitlines()) == 2 and "Traceback" not in shell.stderr, shell.stderr


def test_cli_data_check_refuses_naive_times_unless_tz(capsys, tmp_path, month):
    "Issue 20: naive CSV timestamps were taken as UTC without a word."
    naive = month.iloc[:10].copy()
    naive.index = naive.index.tz_localize(None)
    naive.to_csv(tmp_path / "naive.csv")
    for cmd in ("check", "info"):
        code, out, err = run(capsys, "data", cmd, "naive.csv")
        assert code == 1 and out == "" and "naive.csv" in err and "--tz UTC" in err and len(err.splitlines()) == 1
    code, out, _ = run(capsys, "data", "check", "naive.csv", "--tz", "UTC")
    assert code == 0 and out.startswith("OK naive.csv: 10 bars, 2024-01-01 00:00:00+00:00")
    code, out, _ = run(capsys, "data", "info", "naive.csv", "--tz", "UTC")
    assert code == 0 and "times without a zone taken as UTC" in out


def test_cli_data_info_states_epoch_unit_seconds(capsys, tmp_path, month):
    "Issue 20: epoch seconds were read as ms and failed with `cannot infer the timeframe` (no file, no cause)."
    secs = month.iloc[:10].copy()
    secs.index = pd.Index(secs.index.as_unit("s").asi8, name="timestamp")
    secs.to_csv(tmp_path / "secs.csv")
    code, out, err = run(capsys, "data", "info", "secs.csv")
    assert code == 0, err
    assert "timestamps   epoch s (column 'timestamp', unit inferred from magnitude)" in out and "1m (inferred)" in out
    code, out, _ = run(capsys, "data", "check", "secs.csv")
    assert code == 0 and "2024-01-01 00:00:00+00:00" in out


def test_cli_data_check_caps_listing_at_50_problems(capsys, tmp_path, month):
    "Issue 20: `data check` on 3M bad rows printed 3M lines."
    bad = month.iloc[:500].copy()
    bad["close"] = np.nan
    bad.to_parquet(tmp_path / "bad.parquet")
    code, out, err = run(capsys, "data", "check", "bad.parquet")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 51 and "500 problem(s)" in err
    assert lines[0].startswith("bad.parquet: row 0") and lines[-1] == "... and 450 more problems"
