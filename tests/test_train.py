import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from intraday.config import load_settings
from intraday.data import planted_signal, synth_market
from intraday.train import Trainer, evaluate, model_policy, signal_policy, tune

SMALL = {"total_timesteps": 2048, "n_envs": 4, "n_steps": 128, "batch_size": 128, "eval_every": 1024,
         "checkpoint_every": 1024, "patience": 0}  # fmt: skip


@pytest.fixture(scope="module")
def bars():
    return synth_market(days=10, seed=4, alpha=0.05)


def small_settings(tmp_path, **train):
    return load_settings(environ={}, env={"episode_len": 240}, train={**SMALL, "runs_dir": str(tmp_path), **train})


def weights(model):
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("algo", ["PPO", "A2C", "DQN"])
def test_same_seed_same_data_same_weights(tmp_path, bars, algo):
    a = Trainer(small_settings(tmp_path, algo=algo), bars, tmp_path / "a").fit()
    b = Trainer(small_settings(tmp_path, algo=algo), bars, tmp_path / "b").fit()
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = Trainer(small_settings(tmp_path, algo=algo, seed=1), bars, tmp_path / "c").fit()
    assert not all(torch.equal(wa[k], weights(c)[k]) for k in wa)  # the seed matters (positive control)


def test_run_folder_contents(tmp_path, bars):
    trainer = Trainer(small_settings(tmp_path), bars)
    trainer.fit()
    m = trainer.finish()
    run = trainer.run_dir
    assert run.parent == tmp_path and run.name.endswith(trainer.lineage()["data_hash"][:8])
    for name in ("config.json", "lineage.json", "state.json", "metrics.json", "best.pt"):
        assert (run / name).is_file(), name
    assert (run / "logs" / "progress.csv").is_file() and any((run / "logs").glob("events.out.tfevents*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_1024.pt", "ckpt_2048.pt"]
    lineage = json.loads((run / "lineage.json").read_text())
    assert lineage["data_range"]["start"] == bars.index[0].isoformat() and len(lineage["data_hash"]) == 64
    assert lineage["embargo_bars"] >= 1439 and lineage["versions"]["torch"] == torch.__version__
    assert len(m["history"]) == 2 and {"val", "test", "train"} <= m.keys()
    assert json.loads((run / "config.json").read_text())["train"]["total_timesteps"] == 2048


def test_early_stopping_and_risk_stop(tmp_path, bars):
    t = Trainer(small_settings(tmp_path, total_timesteps=20_000, eval_every=512, patience=1), bars, tmp_path / "es")
    t.fit()
    assert t.state.steps < 20_000 and t.state.since_best >= 1
    risky = small_settings(tmp_path, max_drawdown=0.0001, risk_action="stop", total_timesteps=20_000)
    r = Trainer(risky, bars, tmp_path / "risk")
    r.fit()
    assert r.state.risk_stopped and r.state.breaches == 1 and r.state.steps < 20_000
    pen = Trainer(small_settings(tmp_path, max_drawdown=0.0001), bars, tmp_path / "pen")
    pen.fit()
    m = pen.finish()
    assert m["risk_breaches"] > 0 and m["score"] == pytest.approx(m["val"]["sharpe"] - m["risk_breaches"])


def test_evaluate_policies(tmp_path, bars):
    trainer = Trainer(small_settings(tmp_path), bars, tmp_path / "e")
    splits = trainer.splits
    x = planted_signal(bars).to_numpy()[bars.index.get_indexer(splits.bars["test"].index)]
    oracle = evaluate(signal_policy(splits.env.positions, x), splits, "test", curve=True)
    anti = evaluate(signal_policy(splits.env.positions, -x), splits, "test")
    flat = evaluate(lambda obs, b: np.ones(len(b), dtype=int), splits, "test")
    assert flat["trades"] == 0 and flat["total_log_return"] == 0 and math.isnan(flat["sharpe"])  # as metrics says
    assert oracle["total_log_return"] > anti["total_log_return"]
    assert len(oracle["equity_curve"]) == oracle["bars"] + 1
    assert oracle["episodes"] == len(splits.bars["test"]) // 240 or oracle["episodes"] >= 1


def kill_then_resume(tmp_path, train: dict, steps: int, ready) -> tuple[Path, dict]:
    "`intraday train --direct` killed (SIGKILL to its process group) once `ready(run)`, then `--resume`d: run, metrics."
    overrides = json.dumps({"train": {"checkpoint_every": 1000, "n_envs": 2, "n_steps": 64, "batch_size": 64, **train},
                            "env": {"episode_len": 240}})  # fmt: skip
    args = ["-p", "days", "8", "-p", "total_timesteps", str(steps), "-p", "output_dir", str(tmp_path),
            "-p", "run_id", "killed", "-p", "overrides", overrides]  # fmt: skip
    exe = str(Path(sys.executable).with_name("intraday"))
    env = {**os.environ, "INTRADAY_SETTINGS": str(ROOT / "settings.ini")}
    proc = subprocess.Popen([exe, "train", "--direct", *args], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    run, deadline = tmp_path / "killed", time.time() + 240
    while time.time() < deadline and not ready(run):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and any restart workers it started
    proc.wait()
    before = {p.parent.name: json.loads(p.read_text())["steps"] for p in run.rglob("state.json")}
    assert before and all(0 < n < steps for n in before.values()), before
    r = subprocess.run([exe, "train", "--resume", str(run), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return run, before


def test_resume_after_sigkill(tmp_path):
    "A run killed with SIGKILL mid-training resumes from its last checkpoint and reaches the requested timesteps."
    run, before = kill_then_resume(tmp_path, {"eval_every": 100_000}, 60_000,
                                   lambda run: len(list(run.glob("checkpoints/ckpt_*.pt"))) >= 2)  # fmt: skip
    m = json.loads((run / "metrics.json").read_text())
    assert m["num_timesteps"] >= 60_000 and m["resumed_from"] and m["resumed_from"][0] >= before["killed"]


def test_restarts_keep_the_seed_best_on_validation(tmp_path, bars):
    "[train] restarts = 3 on given environments (one after another): the run is the restart with the best validation."
    s = small_settings(tmp_path, restarts=3, seed=2)
    splits = Trainer(s, bars, tmp_path / "envs").splits
    run = Trainer(s, bars, tmp_path / "run", splits=splits)
    run.fit()
    m = run.finish()
    members = {
        int(d.name[4:]): json.loads((d / "state.json").read_text()) for d in (tmp_path / "run" / "restarts").iterdir()
    }
    assert sorted(members) == [2, 7921, 15840]
    best_seed = max(members, key=lambda k: (members[k]["best"], -k))
    assert [r["seed"] for r in m["restarts"] if r["chosen"]] == [best_seed]
    assert [r["score"] for r in m["restarts"]] == [members[k]["best"] for k in (2, 7921, 15840)]
    assert (tmp_path / "run" / "best.pt").read_bytes() == (
        tmp_path / "run" / "restarts" / f"seed{best_seed}" / "best.pt"
    ).read_bytes()
    assert m["history"] == members[best_seed]["history"] and m["val"]["sharpe"] == pytest.approx(
        members[best_seed]["best"]
    )
    # the chosen restart alone, same seed and data: the same best model
    alone = Trainer(small_settings(tmp_path, seed=best_seed), bars, tmp_path / "alone", splits=splits)
    alone.fit()
    assert alone.state.best == members[best_seed]["best"]


def test_restarts_in_processes_resume_after_sigkill(tmp_path):
    "A run of 2 restarts in 2 processes, killed with its workers mid-training, resumes every restart where it stopped."
    ready = lambda run: sum(len(list(d.glob("checkpoints/ckpt_*.pt"))) >= 2 for d in run.glob("restarts/seed*")) == 2  # noqa: E731
    run, before = kill_then_resume(tmp_path, {"eval_every": 4000, "restarts": 2}, 16_000, ready)
    assert sorted(before) == ["seed0", "seed7919"]  # the run's own state.json comes only when its restarts are done
    m = json.loads((run / "metrics.json").read_text())
    assert [x["seed"] for x in m["restarts"]] == [0, 7919] and sum(x["chosen"] for x in m["restarts"]) == 1
    for name, n in before.items():
        state = json.loads((run / "restarts" / name / "state.json").read_text())
        assert state["steps"] >= 16_000 and state["resumed_from"][0] >= n


def test_tune_runs_trials_into_storage(tmp_path, bars):
    search = {"timesteps": 1024, "storage": f"sqlite:///{tmp_path}/t.db", "n_trials": 2}
    train = {**SMALL, "runs_dir": str(tmp_path), "restarts": 3}  # a trial trains one seed all the same
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "mlartifacts")}
    settings = load_settings(environ={}, env={"episode_len": 240}, train=train, tune=search, registry=tracking)
    study = tune(settings, bars)
    assert len(study.trials) == 2 and (tmp_path / "t.db").is_file()
    again = tune(settings, bars, n_trials=1)  # the same study continues from the database
    assert len(again.trials) == 3
    assert {"learning_rate", "gamma", "ent_coef", "net_arch"} <= again.trials[0].params.keys()
    assert not any((Path(t.user_attrs["run_dir"]) / "restarts").exists() for t in again.trials)
    # every trial is a run of the tune experiment (a real SQLite-backed MLflow store): its hyperparameters, score
    from intraday.registry import mlflow_module, tracking_uri

    c = mlflow_module().MlflowClient(tracking_uri(settings.registry))
    runs = c.search_runs([c.get_experiment_by_name("intraday-tune").experiment_id])
    by_trial = {int(r.data.tags["trial"]): r for r in runs}
    assert sorted(by_trial) == [0, 1, 2] and all(r.data.tags["study"] == "intraday" for r in runs)
    for t in again.trials:
        r = by_trial[t.number]
        assert float(r.data.params["trial.gamma"]) == pytest.approx(t.params["gamma"])
        assert r.data.tags["state"] == "complete" and r.data.metrics["score"] == pytest.approx(t.value)
        assert r.info.run_name == f"intraday-trial{t.number:04d}" and r.data.tags["bundle_sha256"]


def test_model_policy_matches_predict(tmp_path, bars):
    trainer = Trainer(small_settings(tmp_path), bars, tmp_path / "p")
    model = trainer.fit()
    vec = trainer.splits.make_vec_env("val", n_envs=3, seed=0)
    obs = vec.reset()
    np.testing.assert_array_equal(model_policy(model)(obs, None), model.predict(obs, deterministic=True)[0])


class Payload:
    "Unpickling this runs a shell command that creates `path`: what a doctored checkpoint on a shared volume carries."

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("algo", ["PPO", "DQN"])
def test_resume_loads_weights_only_and_refuses_a_doctored_checkpoint(tmp_path, bars, algo):
    import pickle

    settings = small_settings(tmp_path, algo=algo, total_timesteps=1024, eval_every=1024)
    trainer = Trainer(settings, bars, tmp_path / "run")
    model = trainer.fit()
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "ckpt_1024.pt"
    back = Trainer.resume(run, bars).load_weights(ckpt, trainer.splits.make_vec_env("train", 1, seed=0))
    assert back.num_timesteps == 1024 and all(torch.equal(v, weights(back)[k]) for k, v in weights(model).items())
    if algo == "DQN":  # the replay buffer comes back from plain arrays
        assert (run / "checkpoints" / "ckpt_1024_replay.npz").is_file()
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is live: unpickling it creates the file
    assert marker.is_file()
    marker.unlink()
    torch.save({"format": "intraday-weights-v1", "algo": algo, "policy": Payload(marker)}, ckpt)
    with pytest.raises(ValueError, match="not a weights-only checkpoint, refusing to load it"):
        Trainer.resume(run, bars).fit(resume=True)
    (run / "checkpoints" / "ckpt_1024.zip").write_bytes(pickle.dumps(Payload(marker)))  # an SB3-style file name
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "checkpoint": "ckpt_1024.zip"}))
    with pytest.raises(ValueError, match="ckpt_1024.zip: not a weights-only checkpoint"):
        Trainer.resume(run, bars).fit(resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("algo", ["PPO", "DQN"])
def test_a_run_warm_started_from_a_bundle_starts_from_its_policy_and_says_so(tmp_path, algo):
    "Continual retraining: the new run's actor starts as the champion's policy (read from the verified bundle)."
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from intraday.bundle import BundleError, PolicyBundle, export_bundle, policy_module, probe_observations, probe_rows
    from intraday.signing import Trust

    old, new = synth_market(days=10, seed=4), synth_market(days=10, seed=5, start="2024-01-06")  # a later window
    first = Trainer(small_settings(tmp_path, algo=algo), old, tmp_path / "first")
    key = Ed25519PrivateKey.generate()
    s = first.splits
    path = export_bundle(first.fit(), s.pipeline, s.fill_model, s.env, tmp_path / "bundle", key=key,
                         probes=probe_rows(s.pipeline, s.bars["train"]))  # fmt: skip
    champion = PolicyBundle.load(path, trust=Trust.of(key))
    second = Trainer(small_settings(tmp_path, algo=algo, seed=1), new, tmp_path / "second", warm_start=champion)
    model = second._start_model(second.splits.make_vec_env("train", 2, seed=1), resume=False)
    rows, _ = probe_observations(second.splits.pipeline, champion.positions, probe_rows(s.pipeline, s.bars["train"]))
    z = torch.from_numpy(rows)
    assert (policy_module(model, s.pipeline)(z).numpy() == champion.act_batch(rows)).all()  # same inputs, same picks
    lineage = json.loads((tmp_path / "second" / "lineage.json").read_text())
    assert lineage["warm_start"]["policy_sha256"] == champion.manifest["policy_sha256"]
    second.fit()  # and it trains on from there
    wide = Trainer(small_settings(tmp_path, algo=algo, net_arch=[16]), new, tmp_path / "wide", warm_start=champion)
    with pytest.raises(BundleError, match=r"net_arch"):
        wide._start_model(wide.splits.make_vec_env("train", 2, seed=1), resume=False)


def test_a_failing_restart_fails_the_run_with_its_error(tmp_path, bars):
    "A restart whose folder cannot be made (a stray file in its place): the run raises that restart's error."
    s = small_settings(tmp_path, restarts=2, seed=3)
    (tmp_path / "run" / "restarts").mkdir(parents=True)
    (tmp_path / "run" / "restarts" / "seed7922").write_text("not a folder")
    with pytest.raises(FileExistsError, match="seed7922"):
        Trainer(s, bars, tmp_path / "run", restart_workers=2).fit()
    assert not (tmp_path / "run" / "best.pt").exists()  # nothing kept from a run that failed


def test_restarts_from_a_script_without_a_main_guard_say_so(tmp_path):
    "Python starts the restarts' workers by importing the main script: one without the guard gets told, by name."
    script = tmp_path / "noguard.py"
    script.write_text(
        "from intraday.config import load_settings\nfrom intraday.data import synth_market\n"
        "from intraday.train import Trainer\n"
        f"s = load_settings(environ={{}}, env={{'episode_len': 240}}, train={{**{SMALL!r}, 'restarts': 2}})\n"
        f"Trainer(s, synth_market(days=10, seed=4), {str(tmp_path / 'run')!r}).fit()\n"
    )
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "needs `if __name__ == '__main__':`" in r.stderr.splitlines()[-1], r.stderr[-2000:]
