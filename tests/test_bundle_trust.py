"""One trust model for bundles (issue 21): every tamper the issue lists is refused, with its reason; the signature
is checked against keys outside the bundle; `--allow-unsigned` is explicit and still runs every other check."""

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from stable_baselines3 import PPO
from torch import nn

from intraday.bundle import (
    MANIFEST_FILE,
    POLICY_FILE,
    PROBES_FILE,
    SIGNED_FILES,
    BundleError,
    PolicyBundle,
    export_bundle,
    file_sha256,
    probe_rows,
    verify_bundle,
)
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs
from intraday.signing import SIGNATURE_FILE, Trust, sign_folder

UNSIGNED = Trust(allow_unsigned=True)
EXE = str(Path(sys.executable).with_name("intraday"))


@pytest.fixture(scope="module")
def splits():
    bars = synth_market(days=12, seed=9)
    return build_envs(load_settings(environ={}, env={"episode_len": 200}), bars)


@pytest.fixture(scope="module")
def good(tmp_path_factory, splits):
    "A PPO bundle signed by the session's workbench key, its probes real rows of the training bars."
    torch.set_num_threads(1)
    model = PPO("MlpPolicy", splits.make_vec_env("train", 4, seed=0), n_steps=64, batch_size=64, seed=0, device="cpu")
    model.learn(512)
    probes = probe_rows(splits.pipeline, splits.bars["train"])
    path = tmp_path_factory.mktemp("trust") / "ppo"
    return export_bundle(model, splits.pipeline, splits.fill_model, splits.env, path, probes=probes)


def copy(good, tmp_path):
    return Path(shutil.copytree(good, tmp_path / "b"))


def edit(path, **changes):
    m = json.loads((path / MANIFEST_FILE).read_text())
    m.update(changes)
    (path / MANIFEST_FILE).write_text(json.dumps(m))
    return m


def refused(path, reason, pipeline=None, trust=None):
    "The load refuses with `reason` among its problems; returns the problems."
    with pytest.raises(BundleError, match=reason):
        PolicyBundle.load(path, pipeline, trust)
    return verify_bundle(path, pipeline, trust)


def test_a_good_bundle_is_signed_with_real_probes(good, splits):
    b = PolicyBundle.load(good, splits.pipeline)
    sig = json.loads((good / SIGNATURE_FILE).read_text())
    assert sorted(sig["files"]) == sorted(SIGNED_FILES) and b.trust_notes == []
    probes = b.manifest["probes"]
    assert probes["rows"] == 256 and probes["source"].startswith("256 feature rows of bars 2024-")
    with np.load(good / PROBES_FILE, allow_pickle=False) as z:
        obs, actions = z["obs"], z["actions"]
    assert len(np.unique(actions)) >= 2  # the probes see more than one action, or they could not tell modules apart
    assert np.isnan(obs).any(axis=1).sum() > 0 and (~np.isnan(obs).any(axis=1)).sum() > 200  # warm-up rows, then full
    assert b.env_settings().positions == b.positions  # one owner: the backtester trades the action map


def test_an_unsigned_bundle_needs_allow_unsigned(good, tmp_path):
    path = copy(good, tmp_path)
    (path / SIGNATURE_FILE).unlink()
    refused(path, "signature.json: missing: the bundle is unsigned")
    b = PolicyBundle.load(path, trust=UNSIGNED)
    assert b.trust_notes and "allowed unsigned" in b.trust_notes[0]


def test_a_bundle_signed_by_an_unknown_key_is_refused(good, tmp_path):
    path = copy(good, tmp_path)
    sign_folder(path, SIGNED_FILES, Ed25519PrivateKey.generate())
    assert verify_bundle(path, trust=UNSIGNED) == []  # nothing else is wrong with it
    problems = refused(path, "which is not trusted")
    assert problems == [p for p in problems if "not trusted" in p] and len(problems) == 1


def test_a_signature_by_another_key_under_the_trusted_id_is_refused(good, tmp_path):
    path = copy(good, tmp_path)
    sig = json.loads((path / SIGNATURE_FILE).read_text())
    other = json.loads(json.dumps(sign_folder(path, SIGNED_FILES, Ed25519PrivateKey.generate())))
    (path / SIGNATURE_FILE).write_text(json.dumps({**other, "key_id": sig["key_id"]}))
    refused(path, "the signature does not verify with key")


class Constant(nn.Module):
    "Answers the original policy's action on the all-zeros row, whatever the input: right on the zeros probe only."

    def __init__(self, action: int):
        super().__init__()
        self.action = action

    def forward(self, x):
        return torch.full((x.shape[0],), self.action, dtype=torch.int64)


def replace_policy(path, module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path / POLICY_FILE))
    edit(path, policy_sha256=file_sha256(path / POLICY_FILE))  # the hash recomputed, as the attacker did


def test_another_valid_policy_with_its_hash_recomputed_is_refused(good, tmp_path, splits):
    path = copy(good, tmp_path)
    zero = PolicyBundle.load(good).act_batch(np.zeros((1, len(splits.pipeline.names) + 3)))[0]
    replace_policy(path, Constant(int(zero)))
    problems = refused(path, "policy.pt: changed since it was signed")
    assert any(p.startswith("manifest.json: changed since it was signed") for p in problems)
    # without the signature (research), the recorded probes still catch it: the zeros probe alone did not
    research = refused(path, "probes.npz: policy.pt picks other actions than recorded at export", trust=UNSIGNED)
    assert not any("forward pass on zeros" in p for p in research)


@pytest.mark.parametrize(
    "change, research_reason",
    [
        ({"action_map": [5.0, 5.0, 5.0]}, r"action_map: \[5.0, 5.0, 5.0\] differs from env.positions"),
        ({"action_map": [0.0, 1e9, 1.0]}, r"action_map: \[0.0, 1000000000.0, 1.0\] differs from env.positions"),
        ({"action_map": [0.0, 1e9], "env": "both"}, r"env: positions: positions must be 2 or more distinct"),
    ],
)
def test_an_edited_action_map_is_refused(good, tmp_path, change, research_reason):
    path = copy(good, tmp_path)
    m = json.loads((path / MANIFEST_FILE).read_text())
    if change.pop("env", None):
        change["env"] = {**m["env"], "positions": change["action_map"]}
        change["observation_shape"] = m["observation_shape"]
    edit(path, **change)
    refused(path, "manifest.json: changed since it was signed")
    refused(path, research_reason, trust=UNSIGNED)


def test_swapped_feature_names_are_refused(good, tmp_path, splits):
    path = copy(good, tmp_path)
    m = json.loads((path / MANIFEST_FILE).read_text())
    names = list(m["feature_names"])
    names[0], names[1] = names[1], names[0]
    norm = {**m["normalization"], "names": names}  # swapped everywhere the manifest lists them
    edit(path, feature_names=names, normalization=norm)
    refused(path, "manifest.json: changed since it was signed")
    refused(path, "are not the outputs of the bundle's own indicators", trust=UNSIGNED)
    refused(path, "manifest.json: feature_names: ", splits.pipeline, UNSIGNED)


@pytest.mark.parametrize("stat_edit, reason", [(2.0, "changed since it was signed"), (0.0, "need a finite mean and")])
def test_edited_stats_or_clip_are_refused(good, tmp_path, splits, stat_edit, reason):
    path = copy(good, tmp_path)
    m = json.loads((path / MANIFEST_FILE).read_text())
    first = m["feature_names"][0]
    m["normalization"]["stats"][first]["std"] *= stat_edit
    edit(path, normalization=m["normalization"])
    refused(path, reason)
    refused(path, "normalization.stats: bundle and running pipeline differ", splits.pipeline, UNSIGNED)
    clip = copy(good, tmp_path / "clip")
    m = json.loads((clip / MANIFEST_FILE).read_text())
    edit(clip, normalization={**m["normalization"], "clip": 50.0})
    refused(clip, "manifest.json: changed since it was signed")
    refused(clip, "normalization.clip: bundle has 50.0, pipeline has 5.0", splits.pipeline, UNSIGNED)


def test_the_drift_bins_are_signed_and_checked(good, tmp_path):
    "The training deciles the runner's drift monitor compares with travel in the signed manifest, checked on load."
    m = json.loads((good / MANIFEST_FILE).read_text())
    first = m["feature_names"][0]
    st = m["normalization"]["stats"][first]
    assert len(st["shares"]) == len(st["edges"]) + 1 and abs(sum(st["shares"]) - 1) < 1e-9
    path = copy(good, tmp_path)
    st["edges"] = st["edges"][::-1]  # out of order: bins no value can fall into
    edit(path, normalization=m["normalization"])
    refused(path, "changed since it was signed")
    refused(path, rf"\['{first}'\]: drift bins need sorted finite edges", trust=UNSIGNED)


def test_edited_probes_are_refused(good, tmp_path):
    path = copy(good, tmp_path)
    with np.load(path / PROBES_FILE, allow_pickle=False) as z:
        obs, actions = z["obs"], z["actions"].copy()
    actions[:10] = (actions[:10] + 1) % 3
    with open(path / PROBES_FILE, "wb") as f:
        np.savez(f, obs=obs, actions=actions)
    refused(path, "probes.npz: changed since it was signed")
    refused(path, "on 10 of 256 probe observations", trust=UNSIGNED)


def run(*args, **kw):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, **kw)


def test_cli_keygen_verify_sign(good, tmp_path):
    path = copy(good, tmp_path)
    env = os.environ | {"INTRADAY__BUNDLE__SIGNING_KEY": str(tmp_path / "k" / "key"),
                        "INTRADAY__BUNDLE__TRUSTED_KEYS": str(tmp_path / "k" / "trusted")}  # fmt: skip
    r = run("bundle", "verify", str(path), env=env)  # the session key is not trusted by this workbench
    assert r.returncode == 1 and "which is not trusted" in r.stdout, r.stdout + r.stderr
    assert run("bundle", "verify", "--allow-unsigned", str(path), env=env).returncode == 0
    r = run("bundle", "keygen", "--name", "desk", env=env)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "k" / "key").stat().st_mode) == 0o600
    assert r.stdout.splitlines()[-1].startswith("ed25519 ") and r.stdout.splitlines()[-1].endswith(" desk")
    assert "refusing to replace it" in run("bundle", "keygen", env=env).stderr
    assert run("bundle", "sign", str(path), env=env).returncode == 0
    r = run("bundle", "verify", str(path), env=env)
    assert r.returncode == 0 and r.stdout.startswith("OK "), r.stdout
    edit(path, action_map=[5.0, 5.0, 5.0])
    r = run("bundle", "sign", str(path), env=env)  # a bundle failing another check is not signed
    assert r.returncode == 1 and "differs from env.positions" in r.stdout
