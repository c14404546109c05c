import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from intraday.bundle import PolicyBundle
from intraday.cli import main

SMALL = ('{"train": {"n_envs": 4, "n_steps": 128, "batch_size": 128, "eval_every": 1024, "checkpoint_every": 1024}, '
         '"env": {"episode_len": 240}}')  # fmt: skip


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.chdir(tmp_path)


def job_args(tmp_path, run_id, *extra):
    return ["-p", "days", "8", "-p", "total_timesteps", "2048", "-p", "output_dir", str(tmp_path / "runs"),
            "-p", "run_id", run_id, "-p", "overrides", SMALL, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def papermill_run(tmp_path_factory):
    "One real papermill run of nbs/jobs/train.ipynb through `intraday train`."
    tmp = tmp_path_factory.mktemp("job")
    mp = pytest.MonkeyPatch()
    mp.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    code = main(["train", "--notebook", str(ROOT / "nbs/jobs/train.ipynb"), *job_args(tmp, "pm")])
    mp.undo()
    return code, tmp / "runs" / "pm"


def test_papermill_job_writes_record_bundle_and_metrics(papermill_run, capsys):
    code, run = papermill_run
    assert code == 0
    executed = json.loads((run / "train.ipynb").read_text())
    assert any("bundle:" in "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for c in executed["cells"]
               for o in c.get("outputs", []))  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["bundle"] == str(run / "bundle") and metrics["num_timesteps"] >= 2048
    assert set(metrics["comparison"]) == {"policy", "supervised linear", "buy & hold", "planted-signal oracle"}
    assert metrics["comparison"]["supervised linear"]["learner"] == "supervised-linear"
    assert PolicyBundle.load(metrics["bundle_supervised"]).manifest["algorithm"] == "supervised-linear"
    assert (run / "report.html").read_text().count("Plotly.newPlot") == 6  # the job's backtest report
    bundle = PolicyBundle.load(run / "bundle")
    assert bundle.manifest["algorithm"] == "PPO" and len(bundle.manifest["data_hash"]) == 64
    assert main(["bundle", "verify", str(run / "bundle")]) == 0
    assert main(["bundle", "show", str(run / "bundle")]) == 0
    assert "features           30" in capsys.readouterr().out
    # the job notebook's last cell tracked the run (tests/conftest.py's store), with the executed notebook
    from intraday.config import load_settings
    from intraday.registry import OUTCOME_FILE, mlflow_module, tracking_uri

    outcome = json.loads((run / OUTCOME_FILE).read_text())
    c = mlflow_module().MlflowClient(tracking_uri(load_settings().registry))
    assert outcome["experiment"] == "intraday-train" and c.get_run(outcome["run_id"]).info.run_name == "pm"
    assert {"run/train.ipynb", "run/report.html", "run/metrics.json"} <= {
        f.path for f in c.list_artifacts(outcome["run_id"], "run")
    }


def test_verify_names_tampering(papermill_run, tmp_path, capsys):
    _, run = papermill_run
    edited = tmp_path / "edited"
    shutil.copytree(run / "bundle", edited)
    raw = bytearray((edited / "policy.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (edited / "policy.pt").write_bytes(raw)
    assert main(["bundle", "verify", str(edited)]) == 1
    assert "policy.pt: changed since it was signed" in capsys.readouterr().out
    assert main(["bundle", "verify", "--allow-unsigned", str(edited)]) == 1
    assert "policy.pt: sha256 mismatch" in capsys.readouterr().out
    renamed = tmp_path / "renamed"
    shutil.copytree(run / "bundle", renamed)
    m = json.loads((renamed / "manifest.json").read_text())
    m["feature_names"][3] = "ret_61"
    (renamed / "manifest.json").write_text(json.dumps(m))
    assert main(["bundle", "verify", str(renamed)]) == 1
    assert "ret_61" in capsys.readouterr().out


def test_direct_run_and_failure_publishes_nothing(tmp_path, capsys):
    two = [
        SMALL.replace('"n_envs": 4', '"n_envs": 4, "restarts": 2') if a == SMALL else a
        for a in job_args(tmp_path, "direct")
    ]
    assert main(["train", "--direct", *two]) == 0  # best of 2 training seeds
    assert (tmp_path / "runs" / "direct" / "bundle" / "policy.pt").is_file()
    restarts = json.loads((tmp_path / "runs" / "direct" / "metrics.json").read_text())["restarts"]
    kept = [r["seed"] for r in restarts if r["chosen"]]
    assert [r["seed"] for r in restarts] == [0, 7919] and len(kept) == 1
    manifest = PolicyBundle.load(tmp_path / "runs" / "direct" / "bundle").manifest
    assert (
        manifest["seed"] == kept[0] and manifest["restarts"] == restarts
    )  # the lineage names the seed that trained it
    assert (tmp_path / "runs" / "direct" / "report.html").is_file()
    out = capsys.readouterr().out
    assert "planted-signal oracle" in out and "bundle:" in out
    bad = ["train", "--notebook", str(ROOT / "nbs/jobs/train.ipynb"), *job_args(tmp_path, "bad"),
           "-p", "source", "parquet", "-p", "data_path", str(tmp_path / "missing.parquet")]  # fmt: skip
    assert main(bad) == 1
    err = capsys.readouterr().err
    assert "training job failed" in err and "no bundle published" in err
    assert (tmp_path / "runs" / "bad" / "train.ipynb").is_file()
    assert not (tmp_path / "runs" / "bad" / "bundle").exists()


def test_parameter_errors(tmp_path, capsys):
    assert main(["train", "-p", "colour", "red"]) == 2
    assert "unknown job parameter" in capsys.readouterr().err
    params = tmp_path / "p.yaml"
    params.write_text("source: ftp\n")
    assert main(["train", "--direct", "--params", str(params)]) == 1
    assert "source must be synthetic, parquet or store" in capsys.readouterr().err
    assert main(["train", "--notebook", str(tmp_path / "none.ipynb"), *job_args(tmp_path, "x")]) == 2
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "not a run folder" in capsys.readouterr().err
    Path("p2.yaml").write_text("[unclosed\n")
    assert main(["train", "--params", "p2.yaml"]) == 1


def test_supervised_learner_on_a_zoo_market(tmp_path, capsys):
    "`-p learner supervised -p market flow`: no agent trained; the forecaster's bundle ships, against flow's oracle."
    args = job_args(tmp_path, "sup", "-p", "learner", "supervised", "-p", "market", "flow", "-p", "alpha", "0.5")
    assert main(["train", "--direct", *args]) == 0
    run = tmp_path / "runs" / "sup"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["learner"] == "supervised" and metrics["num_timesteps"] == 0 and metrics["history"]
    assert set(metrics["comparison"]) == {"policy", "buy & hold", "planted-signal oracle"}
    # a strong alpha, so that the short test split shows it: flow's own oracle earns, and so does the forecaster
    assert metrics["comparison"]["planted-signal oracle"]["sharpe"] > 10 and metrics["test"]["sharpe"] > 0
    assert PolicyBundle.load(run / "bundle").manifest["algorithm"] == "supervised-linear"
    assert not (run / "checkpoints").exists() and (run / "report.html").is_file()
    assert "supervised-linear" in capsys.readouterr().out
    assert main(["train", "--direct", *job_args(tmp_path, "x", "-p", "learner", "forest")]) == 1
    assert "train.learner" in capsys.readouterr().err


def test_papermill_reads_every_parameter_of_the_job_notebook():
    "A '=' in a parameter's comment made papermill drop it with a WARNING line at every `intraday train`."
    import nbformat
    from papermill.translators import PythonTranslator

    nb = nbformat.read(ROOT / "nbs" / "jobs" / "train.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    names = [p.name for p in PythonTranslator.inspect(cell)]
    assert names == [ln.split("=")[0].strip() for ln in cell.source.splitlines() if ln.strip()]
