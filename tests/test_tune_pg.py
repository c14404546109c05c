"Distributed tuning for real: `intraday tune` worker processes sharing one Optuna study in a PostgreSQL server."

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pgserver import postgres_server

from intraday.bundle import verify_bundle

ROOT = Path(__file__).resolve().parents[1]
INTRADAY = [str(Path(sys.executable).parent / "intraday")]

# tiny budgets: 6 days of bars, 4-hour episodes, 1,024 steps per trial on 2 envs, one evaluation at 512 steps
TINY = {
    "INTRADAY__TUNE__TIMESTEPS": "1024",
    "INTRADAY__TRAIN__N_ENVS": "2",
    "INTRADAY__TRAIN__N_STEPS": "256",
    "INTRADAY__TRAIN__EVAL_EVERY": "512",
    "INTRADAY__TRAIN__CHECKPOINT_EVERY": "512",
    "INTRADAY__ENV__EPISODE_LEN": "240",
}


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server("intraday_tune") as url:
        yield url


def worker(url: str, study: str, index: int, trials: int, runs: Path, log: Path, **env) -> subprocess.Popen:
    "Start one `intraday tune` worker process (own process group, so a kill reaches only it)."
    e = {**os.environ, **TINY, "PYTHONPATH": str(ROOT), "INTRADAY__TUNE__STORAGE": url,
         "INTRADAY__TUNE__STUDY": study, "INTRADAY__TRAIN__RUNS_DIR": str(runs), **env}  # fmt: skip
    cmd = [*INTRADAY, "--settings", str(ROOT / "settings.ini"), "tune", "--trials", str(trials), "--worker", str(index),
           "-p", "days", "6"]  # fmt: skip
    return subprocess.Popen(cmd, env=e, cwd=runs.parent, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def wait(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 600) -> None:
    for p, log in zip(procs, logs):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            raise
        assert rc == 0, f"worker exited {rc}:\n{log.read_text()[-3000:]}"


def test_two_workers_share_one_study(pg_url, tmp_path):
    runs = tmp_path / "runs"
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [worker(pg_url, "shared", i, 3, runs, logs[i]) for i in range(2)]
    wait(procs, logs)
    study = optuna.load_study(study_name="shared", storage=pg_url)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6)), numbers  # every trial of both workers, numbered once each
    assert not [n for n, c in Counter(numbers).items() if c > 1]
    assert Counter(t.user_attrs["worker"] for t in trials) == {0: 3, 1: 3}
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)  # different sampler seeds: no two workers tried the same point
    best = study.best_trial
    assert set(best.params) == {"net_arch", "learning_rate", "gamma", "ent_coef"}
    bundle = Path(best.user_attrs["bundle"])
    assert bundle.parent == Path(best.user_attrs["run_dir"]) and bundle.parent.parent == runs
    assert verify_bundle(bundle) == []
    last = [log.read_text().strip().splitlines()[-1] for log in logs]
    assert any(line.startswith(f"best: trial {best.number}, score") for line in last), last


def test_killed_worker_trial_is_failed_and_retried(pg_url, tmp_path):
    runs = tmp_path / "runs"
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    beat = {"INTRADAY__TUNE__HEARTBEAT": "1", "INTRADAY__TUNE__GRACE": "3", "INTRADAY__TUNE__RETRIES": "1"}
    victim = worker(pg_url, "killed", 0, 20, runs, logs[0], **beat)
    study = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the victim's first trial is running: kill it mid-trial
        try:
            study = optuna.load_study(study_name="killed", storage=pg_url)
            running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        except (KeyError, optuna.exceptions.StorageInternalError):
            running = []
        if running and "run_dir" in running[0].user_attrs:
            break
        assert victim.poll() is None, logs[0].read_text()[-3000:]
        time.sleep(0.1)
    else:
        pytest.fail("the first worker never started a trial")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    killed = running[0].number
    survivor = worker(pg_url, "killed", 1, 2, runs, logs[1], **beat)
    wait([survivor], logs[1:])
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[killed].state == TrialState.FAIL  # marked failed by the survivor's heartbeat check
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1, trials
    r = retried[0]
    assert r.state == TrialState.COMPLETE and r.user_attrs["worker"] == 1
    assert r.params == trials[killed].params  # the same point, run again by the survivor
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    assert verify_bundle(Path(study.best_trial.user_attrs["bundle"])) == []
