"The container image for real: deploy/Dockerfile built by buildah with no network inside the build, then run."

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from deploy_layout import ROOT, TINY, command, cronjob, layout
from pgserver import require

from intraday.bundle import verify_bundle
from intraday.signing import Trust, keygen, read_trusted

IMAGE = os.environ.get("IMAGE", "localhost/intraday:test")
BASE_IMAGE = os.environ.get("BASE_IMAGE", "localhost/intraday-base:bookworm")
RUNTIME = os.environ.get("RUNTIME", "runc")  # crun refuses this machine's hybrid cgroups; runc copes
UID = 10001


def buildah(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image():
    "Build the image offline (deploy/build-offline.sh build); skip only where this machine cannot run a build."
    if shutil.which("buildah") is None or shutil.which(RUNTIME) is None:
        require("image build", f"buildah and {RUNTIME} not installed (apt-get install buildah {RUNTIME})")
    if buildah("inspect", "--type", "image", BASE_IMAGE).returncode:
        require("image build", f"no local base image {BASE_IMAGE}: run deploy/build-offline.sh base")
    if not list((ROOT / "deploy" / "wheels").glob("torch-*.whl")):
        require("image build", "no wheels in deploy/wheels: run deploy/build-offline.sh wheels")
    # can this sandbox run a container at all (user/mount namespaces, overlay, cgroups)? skip with its exact error
    probe = f"intraday-probe-{uuid.uuid4().hex[:8]}"
    r = buildah("from", "--name", probe, BASE_IMAGE)
    if r.returncode == 0:
        r = buildah("run", "--runtime", RUNTIME, "--network", "none", probe, "--", "true")
        buildah("rm", probe)
    if r.returncode:
        pytest.skip(f"this machine cannot run a build container: {r.stderr.strip()}")
    t0 = time.perf_counter()
    build = subprocess.run([str(ROOT / "deploy" / "build-offline.sh"), "build"], capture_output=True, text=True,
                           env={**os.environ, "IMAGE": IMAGE, "BASE_IMAGE": BASE_IMAGE, "RUNTIME": RUNTIME},
                           timeout=1800)  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"image build: {time.perf_counter() - t0:.0f} s")
    ctr = f"intraday-test-{uuid.uuid4().hex[:8]}"
    assert buildah("from", "--name", ctr, IMAGE).returncode == 0
    yield ctr
    buildah("rm", ctr)


def run_in(ctr: str, *cmd: str, volumes: dict[Path, str] | None = None, env: dict | None = None, timeout: float = 900):
    "Run a command in the container as the image's user, no network, HOME unusable (as on a read-only root)."
    vols = [a for host, path in (volumes or {}).items() for a in ("-v", f"{host}:{path}")]
    envs = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    user = ["--user", f"{UID}:{UID}", "-e", "HOME=/nonexistent", *envs]
    return buildah("run", "--runtime", RUNTIME, "--network", "none", *user, *vols, ctr, "--", *cmd, timeout=timeout)


@pytest.mark.slow
def test_image_config(image):
    cfg = json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)["Docker"]["config"]
    assert cfg["Entrypoint"] == ["intraday"] and cfg["User"] == f"{UID}:{UID}" and cfg["WorkingDir"] == "/app"
    r = run_in(image, "intraday", "--help")
    assert r.returncode == 0 and "usage: intraday" in r.stdout, r.stderr
    r = run_in(image, "python3", "-c", "import torch, intraday; print(torch.__version__, intraday.__file__)")
    assert r.returncode == 0 and "+cpu" in r.stdout and "/opt/intraday/lib/" in r.stdout, r.stdout + r.stderr
    r = run_in(image, "id", "-u")
    assert r.stdout.strip() == str(UID)


@pytest.mark.slow
def test_training_job_in_the_image(image, tmp_path):
    # the CronJob's command in the image, its volumes bind-mounted where the pod mounts them
    mounts = layout(tmp_path / "app")
    keys = mounts["/app/keys"]  # the intraday-bundle-signing Secret's files, as the pod sees them
    keygen(keys / "signing.key", keys / "trusted_keys", "cluster")
    for host in [*mounts.values(), *keys.iterdir()]:
        os.chown(host, UID, UID)
    c, _ = cronjob()
    t0 = time.perf_counter()
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}  # the pod's literal env (keys' paths)
    # the cluster's MLflow service is not here: the registry the job releases to is a SQLite file on the reports volume
    env["INTRADAY__REGISTRY__TRACKING_URI"] = "sqlite:////app/reports/mlflow.db"
    r = run_in(image, *command("intraday-train-img") + TINY, volumes={h: m for m, h in mounts.items()}, env=env)
    print(f"2,000-step training job in the image: {time.perf_counter() - t0:.0f} s")
    assert r.returncode == 0, r.stderr[-4000:]
    reports = mounts["/app/reports"]
    nb = nbformat.read(reports / "intraday-train-img.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["run_id"] == "intraday-train-img"
    run_dir = reports / "runs" / "intraday-train-img"
    assert verify_bundle(run_dir / "bundle", trust=Trust(read_trusted(keys / "trusted_keys"))) == []  # the cluster key
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert c["workingDir"] == "/app"
