"""Every command in the README, run as written: the `make` lines as dry runs (CI runs `make test` itself, and
`intraday demo` is run by tests/test_cli.py), the three loops (research, promote, trade) in one shell in a fresh
folder, in order, as a newcomer pastes them. Only the budgets are small, set the documented way: environment
variables over `settings.ini`."""

import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest
from conftest import ROOT

README = ROOT / "README.md"
# the budgets: the loops' commands unchanged, their training and walk-forward made small through the settings
SMALL = {
    "INTRADAY__TRAIN__TOTAL_TIMESTEPS": "2048",
    "INTRADAY__TRAIN__N_ENVS": "2",
    "INTRADAY__TRAIN__N_STEPS": "512",
    "INTRADAY__TRAIN__EVAL_EVERY": "1024",
    "INTRADAY__TRAIN__CHECKPOINT_EVERY": "1024",
    "INTRADAY__TRAIN__COMPARE_SUPERVISED": "false",
    "INTRADAY__WALKFORWARD__FOLDS": "2",
    "INTRADAY__WALKFORWARD__WORKERS": "1",
}


def blocks(text: str) -> list[list[str]]:
    "The README's ```bash blocks, each as its commands: continuation lines joined."
    out = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        cmds, cur = [], ""
        for line in body.splitlines():
            cur += line.strip() if cur else line.rstrip()
            if cur.endswith("\\"):
                cur = cur[:-1].rstrip() + " "
                continue
            if cur.strip():
                cmds.append(cur.strip())
            cur = ""
        out.append(cmds)
    return out


def allowed_to_refuse(cmd: str) -> bool:
    "A command whose comment says it may exit 1 (a refusal is an answer): `# exit 1: ...`."
    return "# exit 1:" in cmd


def script(cmds: list[str]) -> str:
    "One bash script: stops at the first command that fails (a documented refusal, exit 1, is not a failure)."
    lines = ["set -e"]
    for c in cmds:
        code = c.split("  #")[0].rstrip() if "  #" in c else c
        if allowed_to_refuse(c):
            code = f"{code} || [ $? -eq 1 ]"
        lines += [f"echo {shlex.quote('+ ' + code[:120])} >&2", code]
    return "\n".join(lines) + "\n"


def test_the_readme_is_short_and_names_its_blocks():
    text = README.read_text()
    assert len(text.splitlines()) < 250
    bs = blocks(text)
    assert [c.split()[:2] for c in bs[0]] == [["make", "demo"], ["make", "test"]]
    assert len(bs) == 6 and all(bs)  # the two commands, then research, promote, trade, a basket, its paper session


def test_the_block_parser_joins_lines_and_keeps_refusals(tmp_path):
    bs = blocks("x\n```bash\na \\\n  b  # c\n\nd  # exit 1: no\n```\n```text\ne\n```\n")
    assert bs == [["a b  # c", "d  # exit 1: no"]]
    s = script(bs[0])
    assert "\na b\n" in s and "\nd || [ $? -eq 1 ]\n" in s
    (tmp_path / "ok.sh").write_text(script(["false  # exit 1: a refusal", "true"]))
    (tmp_path / "bad.sh").write_text(script(["false", "true"]))
    assert subprocess.run(["bash", tmp_path / "ok.sh"], capture_output=True).returncode == 0
    assert subprocess.run(["bash", tmp_path / "bad.sh"], capture_output=True).returncode == 1


def test_the_make_targets_exist():
    for cmd in blocks(README.read_text())[0]:
        target = cmd.split("#")[0].split()[1]
        r = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the trade loop uses curl and jq")
def test_the_readme_loops_run_as_written(tmp_path):
    "Research, promote and trade, pasted in one shell in a fresh folder: every command exits 0 (or refuses as said)."
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "nbs").symlink_to(ROOT / "nbs")  # the job notebook `intraday train` runs
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTRADAY__REGISTRY")} | SMALL
    bs = blocks(README.read_text())
    cmds = [c for b in bs[1:5] for c in b]  # the basket's paper session (bs[5]) needs the bundle its Python makes
    (tmp_path / "readme.sh").write_text(script(cmds))
    t0 = time.time()
    r = subprocess.run(["bash", "readme.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    print(f"README loops: {time.time() - t0:.0f} s")
    (tmp_path / "stdout.txt").write_text(r.stdout)
    (tmp_path / "stderr.txt").write_text(r.stderr)
    assert r.returncode == 0, f"{r.stderr[-4000:]}\n{r.stdout[-2000:]}"
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert (tmp_path / "reports/runs/first/bundle/signature.json").is_file() and (
        tmp_path / "reports/first.html"
    ).is_file()
    assert (tmp_path / "reports/walkforward/report.html").is_file()
    assert "registered reports/runs/first/bundle as syn-usdt_1m_ppo/1 (alias champion" in out
    assert "registered: syn-usdt_1m_ppo/2 (challenger" in out
    assert "the chain is intact" in out
    assert '"trading_state": "ACTIVE"' in out  # jq's view of /state, 30 s into the session
    assert re.search(r"^trading state +ACTIVE$", out, re.M)  # `live status`
    assert '"action": "kill"' in out and '"reason": "killed: end"' in out  # POST /kill with the token
    start = out.rindex('{\n "trading_state"')  # the runner's last word, its final state (jq indents by two)
    summary, _ = json.JSONDecoder().raw_decode(out[start:])
    assert summary["trading_state"] == "HALTED" and summary["decisions"] >= 10
    assert (tmp_path / "state" / "eod").is_dir() and list((tmp_path / "state" / "eod").glob("transactions-*.csv"))
    (py,) = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)  # a basket: train, bundle, test
    r = subprocess.run([".venv/bin/python", "-"], input=py, cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines() if "test net Sharpe" in ln]
    assert [ln.split()[0] for ln in rows] == ["oracle", "basket", "momentum", "equal"], r.stdout
    sharpe = {ln.split()[0]: float(ln.split("Sharpe")[1].split(",")[0]) for ln in rows}
    assert sharpe["oracle"] > sharpe["equal"] > 0  # the planted rotation is there to be found, in the test split
    manifest = json.loads((tmp_path / "runs/basket/bundle/manifest.json").read_text())
    assert manifest["basket"]["instruments"] == ["AAA/USDT", "BBB/USDT", "CCC/USDT"]
    same_shell = [c for c in bs[3] if c.startswith("export ")] + bs[5]  # the trade loop's exports are still set
    (tmp_path / "basket.sh").write_text(script(same_shell))
    r = subprocess.run(["bash", "basket.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    summary, _ = json.JSONDecoder().raw_decode(r.stdout[r.stdout.index("{") :])
    assert sorted(summary["symbols"]) == ["AAA/USDT", "BBB/USDT", "CCC/USDT"] and summary["decisions"] >= 10
    assert all(x["trading_state"] == "ACTIVE" for x in summary["symbols"].values())


def test_the_readmes_rule_file_is_valid_and_its_scenarios_are_the_defaults_it_names(tmp_path):
    "The risk section's YAML loads as a rule file; its two scenarios are the defaults of the same name."
    from intraday.rules import SCENARIOS, load_risk_file

    text = README.read_text()
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(yaml_blocks) == 1
    (tmp_path / "risk.yaml").write_text(yaml_blocks[0])
    rules, scenarios = load_risk_file(tmp_path / "risk.yaml")
    assert [r.action for r in rules] == ["halt", "reduce", "vol_target", "block"]
    assert set(scenarios) <= set(SCENARIOS) and len(scenarios) == 2


def test_the_readmes_images_exist():
    "Every image the README shows is in the repository (the dashboard's screenshot among them)."
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert "nbs/images/dashboard_live.png" in images
    assert all((ROOT / p).is_file() for p in images), images
