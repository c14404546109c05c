"""Issue 21, the model lifecycle: the MLflow registry (signed versions with lineage, aliases, verified copies), the
promotion gate and rollback through the CLI, and a live runner on the paper venue following the champion."""

import asyncio
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stable_baselines3 import PPO

from intraday.binance import serve
from intraday.bundle import PolicyBundle, export_bundle
from intraday.cli import main
from intraday.config import RegistrySettings, load_settings
from intraday.data import synth_market, write_bars
from intraday.env import build_envs
from intraday.promote import GateError, paired_sharpe_test, promote
from intraday.registry import CHAMPION, ChampionFollower, Registry, RegistryError, mlflow_module, parse_ref
from intraday.signing import SIGNATURE_FILE

BARS = synth_market(days=8, seed=11)  # the training data of every bundle here
NAME = "syn-usdt_1m_ppo"


def fixed_bundle(path: Path, positions: str, pick: int) -> Path:
    "A signed bundle whose policy always picks action `pick`, trained (as its manifest says) on BARS."
    spot = all(0 <= float(w) <= 1 for w in positions.split(","))
    s = load_settings(environ={}, env={"positions": positions, "episode_len": 600,
                                       "account": "spot" if spot else "margin"})  # fmt: skip
    sp = build_envs(s, BARS)
    model = PPO("MlpPolicy", sp.make_env("train"), n_steps=64, batch_size=64, seed=pick, device="cpu")
    net = model.policy.action_net
    net.weight.data.zero_()
    net.bias.data[:] = -10.0
    net.bias.data[pick] = 10.0
    span = {"start": BARS.index[0].isoformat(), "end": BARS.index[-1].isoformat(), "bars": len(BARS)}
    meta = {"symbol": "SYN/USDT", "timeframe": "1m", "data_range": span, "data_hash": "test"}
    return export_bundle(model, sp.pipeline, sp.fill_model, sp.env, path, meta)


def trend_day(after: pd.DataFrame, n: int = 1440, drift: float = 2e-4, seed: int = 0) -> pd.DataFrame:
    "`n` one-minute bars after `after` drifting up `drift` a bar (noise 5e-4): a long position's edge, a short's loss."
    rng = np.random.default_rng(seed)
    close = after["close"].iloc[-1] * np.exp(np.cumsum(drift + 5e-4 * rng.standard_normal(n)))
    open_ = np.concatenate([[after["close"].iloc[-1]], close[:-1]])
    idx = pd.date_range(after.index[-1] + pd.Timedelta("1min"), periods=n, freq="1min", tz="UTC", name="ts")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.0003,
                         "low": np.minimum(open_, close) * 0.9997, "close": close,
                         "volume": 50.0 + rng.random(n) * 10}, index=idx)  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    return {
        "long": fixed_bundle(tmp / "long", "-1,0,1", 2),  # always long: wins on the trend day
        "short": fixed_bundle(tmp / "short", "-1,0,1", 0),  # always short: loses on it
        "flat01": fixed_bundle(tmp / "flat01", "0,1", 0),  # spot: always flat
        "long01": fixed_bundle(tmp / "long01", "0,1", 1),  # spot: always long
    }


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    "An initialised MLflow database (its schema migrations take ~10 s): each test works on its own copy."
    tmp = tmp_path_factory.mktemp("mlflow-template")
    Registry(RegistrySettings(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "art"),
                              experiment="template", cache_dir=str(tmp / "cache"),
                              audit_trail=str(tmp / "trail.jsonl")))  # fmt: skip
    return tmp / "mlflow.db"


@pytest.fixture
def store(template_db, tmp_path, monkeypatch):
    "Registry settings on a private copy of the template database; the CLI gets them from the environment."
    shutil.copy(template_db, tmp_path / "mlflow.db")
    s = RegistrySettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                         cache_dir=str(tmp_path / "cache"),
                         audit_trail=str(tmp_path / "audit" / "trail.jsonl"))  # fmt: skip
    for k, v in s.model_dump().items():
        monkeypatch.setenv(f"INTRADAY__REGISTRY__{k.upper()}", str(v))
    for k, v in {"window_bars": 1200, "min_bars": 600, "n_boot": 300}.items():
        monkeypatch.setenv(f"INTRADAY__PROMOTE__{k.upper()}", str(v))
    return s


@pytest.fixture(scope="module")
def recent(tmp_path_factory):
    "The gate's bars: the training data, then a day no model saw, as a parquet file."
    path = tmp_path_factory.mktemp("recent") / "recent.parquet"
    write_bars(pd.concat([BARS, trend_day(BARS)]), path)
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def runs(reg: Registry, kind: str) -> list:
    return reg.client.search_runs([reg.experiment_id], f"tags.`intraday.kind` = '{kind}'")


# --- the registry ------------------------------------------------------------------------------------------------


def test_a_registered_version_carries_its_lineage_and_resolves_to_a_verified_copy(bundles, store):
    reg = Registry(store)
    first = reg.register(bundles["short"], alias=CHAMPION)
    second = reg.register(bundles["long"])
    assert (first["name"], first["version"], second["version"]) == (NAME, 1, 2)
    assert reg.aliases(NAME) == {"champion": 1, "challenger": 2} and reg.history(NAME) == [1]
    mv, path = reg.resolve(f"{NAME}@challenger")
    manifest = json.loads((bundles["long"] / "manifest.json").read_text())
    signature = json.loads((bundles["long"] / SIGNATURE_FILE).read_text())
    assert mv.tags["bundle_sha256"] == manifest["policy_sha256"] == second["bundle_sha256"]
    assert (mv.tags["key_id"], mv.tags["data_end"], mv.tags["data_hash"]) == (
        signature["key_id"], BARS.index[-1].isoformat(), "test")  # fmt: skip
    assert path.parent == Path(store.cache_dir) / NAME and (path / SIGNATURE_FILE).is_file()
    run = reg.client.get_run(mv.run_id)
    assert run.data.params["algorithm"] == "PPO" and run.data.tags["intraday.kind"] == "register"
    assert {f.path for f in reg.client.list_artifacts(mv.run_id, "bundle")} >= {"bundle/manifest.json",
                                                                                 "bundle/policy.pt"}  # fmt: skip


def test_the_registry_refuses_unsigned_tampered_and_duplicate_bundles(bundles, store, tmp_path):
    reg = Registry(store)
    unsigned = shutil.copytree(bundles["long"], tmp_path / "unsigned")
    (unsigned / SIGNATURE_FILE).unlink()
    with pytest.raises(RegistryError, match=r"refused: .*signature.json: missing: the bundle is unsigned"):
        reg.register(unsigned)
    reg.register(bundles["long"], alias=CHAMPION)
    with pytest.raises(RegistryError, match=f"already registered as {NAME}/1"):
        reg.register(bundles["long"])
    with pytest.raises(RegistryError, match=r"has a champion \(version 1\); only `intraday promote` moves it"):
        reg.register(bundles["short"], alias=CHAMPION)
    _, path = reg.resolve(f"{NAME}@champion")
    m = json.loads((path / "manifest.json").read_text())
    m["action_map"] = [5, 5, 5]  # the cached copy is a folder like any other: edited, it is refused
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RegistryError, match=rf"{NAME}/1 refused: .*manifest.json: changed since it was signed"):
        reg.resolve(f"{NAME}@champion")


def test_unknown_references_and_an_unreachable_server_are_one_line_each(bundles, store):
    reg = Registry(store)
    with pytest.raises(RegistryError, match=r"no model 'nope' \(registered: none\)"):
        reg.resolve("nope@champion")
    reg.register(bundles["long"])
    for ref, msg in ((f"{NAME}@champion", r"has no alias 'champion' \(aliases: challenger -> 1\)"),
                     (f"{NAME}/7", r"has no version 7 \(versions: 1\)"),
                     ("a b@champion", "expected NAME@alias")):  # fmt: skip
        with pytest.raises(RegistryError, match=msg) as e:
            reg.resolve(ref) if "/" in ref or "@" in ref else None
        assert "\n" not in str(e.value)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match=rf"registry http://127.0.0.1:{port}: open the experiment") as e:
        Registry(RegistrySettings(tracking_uri=f"http://127.0.0.1:{port}"))
    assert "\n" not in str(e.value) and time.monotonic() - t0 < 30


def test_mlflow_reaches_no_network(bundles, store, monkeypatch):
    "Telemetry off: registering and resolving open no connection and resolve no name beyond this machine."
    mlflow_module()
    from mlflow.telemetry import get_telemetry_client

    assert get_telemetry_client() is None
    seen = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def spy_connect(self, address):
        seen.append(("connect", address))
        return connect(self, address)

    def spy_getaddrinfo(host, *a, **kw):
        seen.append(("resolve", host))
        return getaddrinfo(host, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", spy_connect)
    monkeypatch.setattr(socket, "getaddrinfo", spy_getaddrinfo)
    reg = Registry(store)
    reg.register(bundles["long"], alias=CHAMPION)
    reg.resolve(f"{NAME}@champion")
    time.sleep(0.5)  # a telemetry thread would send by now
    local = {"127.0.0.1", "::1", "localhost"}
    assert [s for s in seen if (s[1][0] if isinstance(s[1], tuple) else s[1]) not in local] == []


# --- the gate ----------------------------------------------------------------------------------------------------


def test_paired_test_sees_an_edge_and_not_noise():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1e-3, (3, 1500))
    assert paired_sharpe_test(x[0] + 3e-4, x[1], 525600, 300)["p_value"] < 0.01
    assert paired_sharpe_test(x[0], x[2], 525600, 300)["p_value"] > 0.05
    assert paired_sharpe_test(np.zeros(50), x[0, :50], 525600, 200)["sharpe_challenger"] == 0.0  # flat: Sharpe 0


def test_a_better_challenger_is_promoted_and_rollback_brings_the_champion_back(bundles, store, recent, capsys):
    reg = Registry(store)
    reg.register(bundles["short"], alias=CHAMPION)
    assert cli(capsys, "register", str(bundles["long"]))[0] == 0
    code, out, err = cli(capsys, "promote", NAME, "--challenger", "2", "--data", str(recent))
    assert code == 0, err
    assert f"promote: {NAME}@champion is now version 2 (was 1); every rule passed" in out
    assert "window 2024-01-09" in out and "(1200 bars)" in out
    assert reg.aliases(NAME)["champion"] == 2 and reg.history(NAME) == [1, 2]
    (run,) = runs(reg, "promote")
    ev = json.loads(Path(reg.mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evidence.json",
                                                                 tracking_uri=reg.uri)).read_text())  # fmt: skip
    assert ev["window"]["bars"] == 1200 and ev["test"]["p_value"] < 0.05 and ev["passed"] and ev["moved"]
    assert run.data.tags["challenger_sha256"] == reg.version(f"{NAME}/2").tags["bundle_sha256"]
    assert run.data.metrics["challenger.sharpe"] > run.data.metrics["champion.sharpe"]
    assert "compiled" in ev["engines"]["challenger"]  # the compiled backtester ran both
    code, out, err = cli(capsys, "rollback", NAME, "--reason", "desk asked")
    assert code == 0 and f"rolled back {NAME}@champion: version 2 -> 1" in out
    assert reg.aliases(NAME)["champion"] == 1
    (rb,) = runs(reg, "rollback")
    assert (rb.data.tags["from_version"], rb.data.tags["to_version"], rb.data.tags["reason"]) == (
        "2",
        "1",
        "desk asked",
    )
    code, _, err = cli(capsys, "rollback", NAME, "--reason", "again")
    assert code == 1 and "champion 1 has no previous champion" in err
    code, out, _ = cli(capsys, "models", NAME)
    assert code == 0 and "champion history: [1]" in out
    code, out, _ = cli(capsys, "models")
    assert code == 0 and out.strip() == f"{NAME}  challenger -> 2, champion -> 1"
    kinds = ["register", "champion", "register", "promote", "champion", "champion", "rollback"]
    assert [r["kind"] for r in reg.trail.records()] == kinds  # every move of the champion is a record of its own
    assert reg.trail.records()[3]["data"]["challenger_sha256"] == reg.version(f"{NAME}/2").tags["bundle_sha256"]
    assert [(r["data"]["version"], r["data"]["previous"]) for r in reg.trail.records() if r["kind"] == "champion"] == [
        (1, None), (2, 1), (1, 2)]  # fmt: skip


def test_audit_verify_names_the_first_record_changed_removed_or_reordered(bundles, store, recent, capsys):
    reg = Registry(store)
    reg.register(bundles["short"], alias=CHAMPION)
    reg.register(bundles["long"])
    promote(reg, NAME, 2, pd.read_parquet(recent), load_settings())
    reg.rollback(NAME, "test")
    code, out, _ = cli(capsys, "audit", "anchor")
    assert code == 0 and "anchored the audit trail's head: seq 7" in out
    code, out, _ = cli(capsys, "audit", "verify")
    assert code == 0 and "8 records, the chain is intact (1 anchored heads checked)" in out
    path = Path(store.audit_trail)
    good = path.read_text().splitlines()

    def verify_after(lines) -> str:
        path.write_text("\n".join(lines) + "\n")
        code, _, err = cli(capsys, "audit", "verify")
        assert code == 1 and len(err.strip().splitlines()) == 1
        return err

    edited = good[3].replace('"moved": "True"', '"moved": "False"')
    assert edited != good[3]
    assert f"{path}:4 (seq 4, promote at " in verify_after([*good[:3], edited, *good[4:]])
    assert "changed: its content does not give its hash" in verify_after([*good[:3], edited, *good[4:]])
    assert f"{path}:4 (seq 5, champion" in verify_after([*good[:3], *good[4:]])  # the promotion removed
    assert "removed: seq 4 missing before it" in verify_after([*good[:3], *good[4:]])
    assert "reordered: seq 4 comes later, at line 5" in verify_after([*good[:3], good[4], good[3], *good[5:]])
    assert "cut short or rewritten: the anchored head seq 7" in verify_after(good[:6])  # the rollback removed
    path.write_text("\n".join(good) + "\n")
    assert cli(capsys, "audit", "verify")[0] == 0


def test_a_worse_challenger_is_refused_with_its_numbers_and_an_approval_is_recorded(bundles, store, recent, capsys):
    reg = Registry(store)
    reg.register(bundles["long"], alias=CHAMPION)
    reg.register(bundles["short"])
    code, out, err = cli(capsys, "promote", NAME, "--challenger", "2", "--data", str(recent))
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"intraday: refused: {NAME}@champion stays version 1: net Sharpe -")
    assert "p = 1.000 (needs > 0 with p < 0.05)" in line and "max drawdown" in line
    assert reg.aliases(NAME)["champion"] == 1
    (refused,) = runs(reg, "refuse")
    assert refused.data.tags["moved"] == "False" and refused.data.metrics["test.p_value"] == 1.0
    code, _, err = cli(capsys, "promote", NAME, "--challenger", "2", "--data", str(recent), "--approve")
    assert code == 1 and "--approve needs --reason" in err and reg.aliases(NAME)["champion"] == 1
    code, out, err = cli(capsys, "promote", NAME, "--challenger", "2", "--data", str(recent), "--approve",
                         "--reason", "regime change expected")  # fmt: skip
    assert code == 0 and f"approve: {NAME}@champion is now version 2 (was 1); approved by" in out
    assert reg.aliases(NAME)["champion"] == 2
    (approved,) = runs(reg, "approve")
    tags = approved.data.tags
    assert tags["reason"] == "regime change expected" and tags["approved_by"] == tags["intraday.user"]
    assert tags["passed"] == "False" and "net Sharpe" in tags["why"]


def test_a_gate_with_too_few_bars_refuses_to_run_and_leaves_the_champion(bundles, store, tmp_path, capsys):
    reg = Registry(store)
    reg.register(bundles["short"], alias=CHAMPION)
    reg.register(bundles["long"])
    short = tmp_path / "short.parquet"
    write_bars(pd.concat([BARS, trend_day(BARS, n=200)]), short)
    code, _, err = cli(capsys, "promote", NAME, "--challenger", "2", "--data", str(short))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "window: 200 bars after the models' training data" in err and "min_bars is 600" in err
    assert reg.aliases(NAME)["champion"] == 1 and runs(reg, "refuse") == []
    with pytest.raises(GateError, match="version 1 is the champion already"):
        promote(reg, NAME, 1, BARS)


# --- the runner follows the champion -----------------------------------------------------------------------------


def test_a_live_runner_swaps_to_a_promoted_champion_between_bars_without_missing_a_decision(
    bundles, store, recent, tmp_path
):
    from test_unattended import KEY, close, runner_for, venue_for

    reg = Registry(store)
    reg.register(bundles["flat01"], alias=CHAMPION)
    reg.register(bundles["long01"])
    venue = venue_for(bundles["flat01"])
    url, stop = serve(venue)
    assert KEY

    async def session():
        follow = ChampionFollower(reg, f"{NAME}@champion", tmp_path / "model")
        r = await runner_for(url, tmp_path / "state", follow.folder)
        r.hooks["on_bar"].append(follow)
        ds = []
        for i in range(12):
            if i == 5:  # the gate runs while the runner trades
                out = promote(reg, NAME, 2, pd.read_parquet(recent), load_settings())
                assert out["moved"], out["why"]
            venue.step()
            ds.append(await r.on_bar(await r.feed.next()))
        await close(r)
        return r, follow, ds

    r, follow, ds = asyncio.run(session())
    stop()
    assert all(d is not None for d in ds)  # a decision on every bar, the swap's included
    assert [d["target_weight"] for d in ds] == [0.0] * 5 + [1.0] * 7
    assert r.swaps == {"accepted": 1, "refused": 0} and follow.version == 2
    assert r.bundle.manifest["policy_sha256"] == reg.version(f"{NAME}/2").tags["bundle_sha256"]
    assert PolicyBundle.load(follow.folder).manifest["policy_sha256"] == r.bundle.manifest["policy_sha256"]
    assert parse_ref(follow.ref) == (NAME, "champion", None)
    follows = [r["data"] for r in reg.trail.records() if r["kind"] == "follow"]
    assert [(f["version"], f["previous"]) for f in follows] == [(1, None), (2, 1)]


def test_live_run_model_trades_the_registry_champion_or_names_what_is_missing(bundles, store, tmp_path, capsys,
                                                                               monkeypatch):  # fmt: skip
    from test_unattended import KEY, SECRET, venue_for

    Registry(store).register(bundles["long01"], alias=CHAMPION)
    monkeypatch.setenv("INTRADAY_API_KEY", KEY)
    monkeypatch.setenv("INTRADAY_API_SECRET", SECRET)
    venue = venue_for(bundles["long01"], speed=60.0)  # real-time replay at 60x: a bar a second
    url, stop = serve(venue)
    try:
        base = ["live", "--url", url, "--state-dir", str(tmp_path / "st"), "--bars", "3"]
        code, _, err = cli(capsys, *base, "--model", f"{NAME}@shadow")
        assert code == 1 and err.strip() == (f"intraday: registry {Registry(store).uri}: model {NAME} has no alias "
                                             "'shadow' (aliases: champion -> 1)")  # fmt: skip
        code, out, err = cli(capsys, *base, "--model", f"{NAME}@champion")
        assert code == 0, err[-2000:]
    finally:
        stop()
    final = json.loads(out)
    assert final["decisions"] >= 1 and final["position"] > 0  # the champion (always long) traded
    assert PolicyBundle.load(tmp_path / "st" / "model").manifest["policy_sha256"] == (
        Registry(store).version(f"{NAME}@champion").tags["bundle_sha256"])  # fmt: skip


def test_a_bundle_in_a_training_run_folder_is_registered_with_the_runs_record(bundles, store, tmp_path):
    run = tmp_path / "runs" / "20260101-ppo-s0"
    shutil.copytree(bundles["long"], run / "bundle")
    (run / "metrics.json").write_text(json.dumps({"test": {"sharpe": 1.5}}))
    (run / "report.html").write_text("<html>report</html>")
    reg = Registry(store)
    out = reg.register(run / "bundle")
    logged = {f.path for f in reg.client.list_artifacts(out["run_id"], "run")}
    assert logged == {"run/metrics.json", "run/report.html"}  # train.ipynb is absent here, so not logged
    assert reg.version(f"{NAME}/1").tags["source"] == str((run / "bundle").resolve())


def test_a_trail_with_an_unreadable_last_record_takes_no_new_one(tmp_path):
    from intraday.trail import Trail, TrailError, verify

    trail = Trail(tmp_path / "t.jsonl")
    assert verify(trail.path) == (0, None) and "no audit trail here" in verify(trail.path, [(1, "ab")])[1]
    trail.append("kill", reason="test")
    with open(trail.path, "a") as f:
        f.write('{"seq": 2, "kind": "cut sh\n')
    with pytest.raises(TrailError, match=r"t.jsonl:2: the last record is unreadable"):
        trail.append("resume")
    assert [r["kind"] for r in trail.records()] == ["kill"]
    assert verify(trail.path) == (1, f"{trail.path}:2: changed: the line is not a JSON record")


def test_kill_and_resume_from_the_cli_are_links_of_the_audit_trail(store, tmp_path, capsys):
    from intraday.journal import Journal
    from intraday.trail import Trail, verify

    state = tmp_path / "state"
    Journal(state, runner="t").close()  # resume acts on a runner's journal
    assert cli(capsys, "live", "kill", "--state-dir", str(state), "--reason", "desk says stop")[0] == 0
    assert cli(capsys, "live", "resume", "--state-dir", str(state), "--reason", "all clear")[0] == 0
    recs = Trail(store.audit_trail).records()
    assert [(r["kind"], r["data"]["reason"], r["data"]["state_dir"]) for r in recs] == [
        ("kill", "desk says stop", str(state)), ("resume", "all clear", str(state))]  # fmt: skip
    assert verify(store.audit_trail) == (2, None)


def test_train_register_publishes_the_bundle_as_a_challenger_with_its_run(store, tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    from test_trainjob import job_args

    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--direct", "--register", *job_args(tmp_path, "reg"))
    assert code == 0, err[-2000:]
    assert "registered: syn-usdt_1m_ppo/1 (challenger, run " in out
    reg = Registry(store)
    mv = reg.version(f"{NAME}@challenger")
    assert mv.tags["source"] == str((tmp_path / "runs" / "reg" / "bundle").resolve())
    assert {f.path for f in reg.client.list_artifacts(mv.run_id, "run")} == {"run/metrics.json", "run/report.html"}
    assert reg.client.get_run(mv.run_id).data.metrics["test.sharpe"] == pytest.approx(
        json.loads((tmp_path / "runs" / "reg" / "metrics.json").read_text())["test"]["sharpe"])  # fmt: skip


def test_a_shadow_period_beside_the_live_champion_joins_the_gate(bundles, store, recent, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    "The challenger runs in --shadow beside the champion on the paper venue; the gate replays both journals."
    from test_unattended import KEY, REAL, SECRET, router_for

    from intraday.bundle import PolicyBundle
    from intraday.journal import Journal
    from intraday.live import BarFeed, LiveRunner
    from intraday.venue import Venue

    monkeypatch.setenv("INTRADAY__PROMOTE__SHADOW_MIN_BARS", "100")
    reg = Registry(store)
    reg.register(bundles["flat01"], alias=CHAMPION)
    reg.register(bundles["long01"])
    data = pd.read_parquet(recent)  # the training bars, then the trend day: the shadow period is its first bars
    fm = PolicyBundle.load(bundles["flat01"]).fill_model()
    venue = Venue(data, start=len(BARS), admin=True, keys={KEY: SECRET}, fill_model=fm, spec=REAL,
                  balances={"USDT": 10_000.0, "SYN": 0.0})  # fmt: skip
    url, stop = serve(venue)

    async def runner(state: Path, ref: str, shadow: bool) -> LiveRunner:
        router = router_for(url, state)
        await router.start()
        # two runners stepped in turn: a push that lands while the other one decides is read over REST, soon
        feed = BarFeed(router.ex, "SYN/USDT", "1m", stale_s=0.2, closed_only=True)
        r = LiveRunner(router, feed, reg.resolve(ref)[1], shadow=shadow)
        await r.start()
        return r

    async def session():
        live = await runner(tmp_path / "live", f"{NAME}@champion", False)
        shadow = await runner(tmp_path / "shadow", f"{NAME}@challenger", True)
        for _ in range(120):
            venue.step()
            for r in (live, shadow):
                await r.on_bar(await r.feed.next())
        rec = await shadow.reconcile()  # the shadow's imagined long is not the account's: no mismatch, no alert
        for r in (live, shadow):
            await r.feed.close()
            await r.router.ex.close()
        return live, shadow, rec

    live, shadow, rec = asyncio.run(session())
    stop()
    assert not rec.get("mismatch") and not [a for a in shadow.router.alerts if "mismatch" in a]
    assert venue.ledger()["trades"] == []  # the champion stays flat, the shadow sends nothing
    decisions = Journal.open(tmp_path / "shadow").events(kind="decision")
    assert len(decisions) == 120 and all(e["data"]["shadow"] and e["data"]["action"] == 1 for e in decisions)
    args = ["promote", NAME, "--challenger", "2", "--data", str(recent), "--live-state", str(tmp_path / "live"),
            "--shadow-state", str(tmp_path / "shadow")]  # fmt: skip
    monkeypatch.setenv("INTRADAY__PROMOTE__SHADOW_MIN_BARS", "1000")
    code, _, err = cli(capsys, *args)
    assert code == 1 and "shadow: 120 bars decided by both" in err and "shadow_min_bars is 1000" in err
    assert reg.aliases(NAME)["champion"] == 1  # a gate that cannot judge moves nothing
    monkeypatch.setenv("INTRADAY__PROMOTE__SHADOW_MIN_BARS", "100")
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert "(120 bars decided by both runners); the challenger's live decisions equal its backtest's on 100.0%" in out
    assert f"promote: {NAME}@champion is now version 2 (was 1); every rule passed" in out
    assert "shadow: net Sharpe" in out
    (run,) = runs(reg, "promote")
    assert run.data.metrics["shadow.agreement"] == 1.0 and run.data.metrics["shadow.test.sharpe_champion"] == 0.0
    code, _, err = cli(capsys, "promote", NAME, "--challenger", "1", "--data", str(recent), "--live-state", "x")
    assert code == 2 and "--live-state and --shadow-state go together" in err


def test_a_retraining_job_starts_from_the_champion_registers_and_is_gated_on_bars_it_held_out(
    bundles, store, tmp_path, capsys, monkeypatch
):
    "The CronJob's path, `release = gate` and `holdout_bars`: a challenger version, then the gate on the held-out bars."
    from conftest import ROOT
    from test_trainjob import job_args

    from intraday.trainjob import TrainJob

    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.chdir(tmp_path)
    reg = Registry(store)
    reg.register(bundles["flat01"], alias=CHAMPION)  # trained (its manifest says) on the first 8 days
    champ = TrainJob({"warm_start": f"{NAME}@champion"})._warm_start()  # resolved and verified through the registry
    assert champ.manifest["policy_sha256"] == reg.version(f"{NAME}@champion").tags["bundle_sha256"]
    assert TrainJob({"warm_start": "other_1m_ppo@champion"})._warm_start() is None  # no such champion: from scratch
    argv = job_args(tmp_path, "retrain", "-p", "days", "12", "-p", "holdout_bars", "1200", "-p", "release", "gate")
    code, out, err = cli(capsys, "train", "--direct", *argv)
    assert code == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("release: "))
    assert line.startswith(f"release: {NAME}/2 ") and any(w in line for w in ("promote", "refuse")), line
    (run,) = runs(reg, "promote") or runs(reg, "refuse")
    ev = json.loads(Path(reg.mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evidence.json",
                                                                 tracking_uri=reg.uri)).read_text())  # fmt: skip
    full = synth_market(days=12, seed=load_settings().data.seed)  # the job's market, the held-out tail included
    assert ev["window"]["bars"] == 1200 and pd.Timestamp(ev["window"]["start"]) == full.index[-1200]
    manifest = json.loads((tmp_path / "runs" / "retrain" / "bundle" / "manifest.json").read_text())
    assert pd.Timestamp(manifest["selected_until"]) < full.index[-1200]  # nothing it was chosen on is in the window
    code, _, err = cli(capsys, "train", "--direct", "--register", *argv)
    assert code == 2 and "use one" in err
