"The training CronJob's command and volumes as data, to run it outside the cluster exactly as the manifest writes it."

import re
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRONJOB = ROOT / "deploy" / "k8s" / "train-cronjob.yaml"
# a tiny budget for tests, given as extra papermill parameters after the manifest's own (papermill's -p beats -f)
TINY_OVERRIDES = "overrides: {env: {episode_len: 240}, train: {n_envs: 2, eval_every: 1024, checkpoint_every: 1024}}"
TINY = ["-p", "total_timesteps", "2000", "-p", "days", "9", "-y", TINY_OVERRIDES]


def cronjob() -> tuple[dict, dict]:
    "The CronJob's container and pod spec."
    docs = {d["kind"]: d for d in yaml.safe_load_all(CRONJOB.read_text()) if d}
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod["containers"][0], pod


def command(job_name: str) -> list[str]:
    "command + args with $(VAR) expanded as the kubelet does; JOB_NAME is what the downward API would give."
    c, _ = cronjob()
    env = {e["name"]: e.get("value") for e in c.get("env", [])} | {"JOB_NAME": job_name}
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], a) for a in c["command"] + c["args"]]


def layout(app: Path) -> dict[str, Path]:
    "Lay out `app` like the pod's /app: image files, the ConfigMap's files, empty volumes; mount path -> host path."
    c, pod = cronjob()
    app.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "settings.ini", app / "settings.ini")
    (app / "nbs" / "jobs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbs" / "jobs" / "train.ipynb", app / "nbs" / "jobs" / "train.ipynb")
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmaps = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all(CRONJOB.read_text()) if d and d["kind"] == "ConfigMap"
    }
    mounts = {}
    for m in c["volumeMounts"]:
        rel = Path(m["mountPath"]).relative_to(c["workingDir"]) if m["mountPath"].startswith(c["workingDir"]) else None
        if rel is None:  # /tmp and the like stay the host's
            continue
        host = app / rel
        host.mkdir(parents=True, exist_ok=True)
        if "configMap" in (v := volumes[m["name"]]):
            for key, text in configmaps[v["configMap"]["name"]]["data"].items():
                (host / key).write_text(text)
        mounts[m["mountPath"]] = host
    return mounts
