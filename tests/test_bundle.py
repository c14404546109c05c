"Policy bundles: parity with SB3's deterministic predict, tamper detection, atomic export, manifest round trips."

import json
import shutil

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

import intraday.bundle as bundle_mod
from intraday.bundle import (
    MANIFEST_FILE,
    POLICY_FILE,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    BundleError,
    PolicyBundle,
    bars_fingerprint,
    export_bundle,
    file_sha256,
    verify_bundle,
)
from intraday.config import EnvSettings, load_settings
from intraday.data import synth_market
from intraday.env import build_envs
from intraday.features import FeaturePipeline
from intraday.signing import Trust

UNSIGNED = Trust(allow_unsigned=True)  # research: the checks behind the signature, reached without one

ALGOS = {
    "PPO": (PPO, {"n_steps": 64, "batch_size": 64}),
    "A2C": (A2C, {"n_steps": 16}),
    "DQN": (DQN, {"learning_starts": 64, "buffer_size": 2_000, "train_freq": 4}),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "Tiny networks: one torch thread avoids oversubscribing a busy runner; restored afterwards."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def market():
    bars = synth_market(days=12, seed=9)
    settings = load_settings(environ={}, env={"episode_len": 200})
    return bars, build_envs(settings, bars)


@pytest.fixture(scope="module")
def splits(market):
    return market[1]


def train(splits, algo: str, steps: int = 512):
    cls, kw = ALGOS[algo]
    model = cls("MlpPolicy", splits.make_vec_env("train", 4, seed=0), seed=0, device="cpu", **kw)
    return model.learn(steps)


@pytest.fixture(scope="module")
def models(splits):
    return {algo: train(splits, algo) for algo in ALGOS}


@pytest.fixture(scope="module")
def val_rows(market):
    """10,000 validation observations from the val env under random actions, with the raw rows they came from.

    Each observation is paired with the bar it shows through the step's info["bar"] (for an env that just finished
    its episode, with info["terminal_observation"], since the returned observation already belongs to the next one)."""
    bars, splits = market
    pipe = splits.pipeline
    raw_val = pipe.transform(bars).loc[splits.bars["val"].index].to_numpy()
    venv = splits.make_vec_env("val", 16, seed=1)
    venv.reset()
    rng = np.random.default_rng(1)
    obs_rows, bar_rows = [], []
    while len(obs_rows) < 10_000:
        obs, _, dones, infos = venv.step(rng.integers(0, venv.action_space.n, venv.num_envs))
        for k, info in enumerate(infos):
            obs_rows.append(info["terminal_observation"] if dones[k] else obs[k])
            bar_rows.append(info["bar"])
    obs = np.array(obs_rows[:10_000])
    bar = np.array(bar_rows[:10_000])
    nf = len(pipe.names)
    raw = np.hstack([raw_val[bar], obs[:, nf:].astype(np.float64)])
    return obs, raw


@pytest.fixture(scope="module")
def good(tmp_path_factory, splits, models, market):
    "A bundle of the PPO model with full metadata, exported once; tests copy it before damaging it."
    path = tmp_path_factory.mktemp("good") / "ppo"
    meta = {**bars_fingerprint(splits.bars["train"]), "metrics": {"val_return": 0.01}, "run_id": "t-1"}
    return export_bundle(models["PPO"], splits.pipeline, splits.fill_model, splits.env, path, metadata=meta)


def copy_of(good, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(good, dst)
    return dst


def edit_manifest(path, **changes):
    m = json.loads((path / MANIFEST_FILE).read_text())
    m.update(changes)
    (path / MANIFEST_FILE).write_text(json.dumps(m))
    return m


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# parity ---------------------------------------------------------------------------------------------------------


def test_val_rows_map_back_to_raw_features(splits, val_rows):
    obs, raw = val_rows
    nf = len(splits.pipeline.names)
    np.testing.assert_array_equal(obs[:, :nf], np.nan_to_num(splits.pipeline.normalize(raw[:, :nf])).astype(np.float32))


@pytest.mark.parametrize("algo", list(ALGOS))
def test_bundle_acts_exactly_like_sb3_predict(algo, tmp_path, splits, models, val_rows):
    model = models[algo]
    obs, raw = val_rows
    path = export_bundle(model, splits.pipeline, splits.fill_model, splits.env, tmp_path / algo)
    bundle = PolicyBundle.load(path, pipeline=splits.pipeline)
    expected = model.predict(obs, deterministic=True)[0]
    got = bundle.act_batch(raw)
    assert got.dtype == np.int64 and got.shape == (10_000,)
    assert len(np.unique(expected)) >= 2, "a constant policy would make parity trivial"
    mismatches = int((got != expected).sum())
    assert mismatches == 0, f"{algo}: {mismatches} of 10,000 actions differ"
    singles = [bundle.act(raw[i, : len(bundle.feature_names)], raw[i, len(bundle.feature_names) :]) for i in range(300)]
    np.testing.assert_array_equal(singles, expected[:300])
    assert bundle.manifest["algorithm"] == algo


def test_warm_up_nan_features_act_like_zeros(good, splits, models):
    bundle = PolicyBundle.load(good)
    nf = len(bundle.feature_names)
    rng = np.random.default_rng(3)
    state = np.column_stack([rng.choice([-1.0, 0.0, 1.0], 200), rng.normal(0, 0.02, 200), rng.random(200)])
    raw = np.hstack([np.full((200, nf), np.nan), state])
    obs = np.hstack([np.zeros((200, nf)), state]).astype(np.float32)
    np.testing.assert_array_equal(bundle.act_batch(raw), models["PPO"].predict(obs, deterministic=True)[0])


def test_act_validates_input_shapes(good):
    bundle = PolicyBundle.load(good)
    nf = len(bundle.feature_names)
    with pytest.raises(ValueError, match="3 state values"):
        bundle.act(np.zeros(nf), np.zeros(2))
    with pytest.raises(ValueError, match=rf"shape \(n, {nf + 3}\)"):
        bundle.act_batch(np.zeros((4, nf)))
    assert bundle.act_batch(np.zeros((3, nf + 3), dtype=np.float32)).shape == (3,)
    assert bundle.target(np.zeros(nf), [0.0, 0.0, 1.0]) in bundle.positions


# manifest -------------------------------------------------------------------------------------------------------


def test_manifest_records_everything(good, splits):
    m = json.loads((good / MANIFEST_FILE).read_text())
    assert set(REQUIRED_FIELDS) <= set(m)
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["feature_names"] == splits.pipeline.names
    assert m["normalization"]["stats"] == splits.pipeline.stats
    assert m["observation_shape"] == [len(splits.pipeline.names) + 3]
    assert m["action_map"] == [float(p) for p in splits.env.positions]
    assert m["fill_model"] == splits.fill_model.to_dict()
    assert m["env"]["episode_len"] == 200
    assert m["algorithm"] == "PPO" and m["seed"] == 0
    assert m["hyperparameters"]["n_steps"] == 64 and m["hyperparameters"]["batch_size"] == 64
    assert m["data_range"]["bars"] == len(splits.bars["train"])
    assert m["data_hash"] == bars_fingerprint(splits.bars["train"])["data_hash"]
    assert m["metrics"] == {"val_return": 0.01} and m["run_id"] == "t-1"
    assert set(m["versions"]) == {"intraday", "torch", "stable_baselines3", "numpy", "python"}
    assert m["versions"]["torch"] == torch.__version__
    assert m["policy_sha256"] == file_sha256(good / POLICY_FILE)
    assert m["created_at"].endswith("+00:00")


def test_unknown_metadata_is_none(tmp_path, splits, models):
    path = export_bundle(models["A2C"], splits.pipeline, splits.fill_model, splits.env, tmp_path / "b",
                         metadata={"git_revision": None})  # fmt: skip
    m = PolicyBundle.load(path).manifest
    assert (m["metrics"], m["data_range"], m["data_hash"], m["git_revision"]) == (None, None, None, None)


def test_round_trip_of_pipeline_fill_model_and_env(good, market):
    bars, splits = market
    bundle = PolicyBundle.load(good, pipeline=splits.pipeline)
    pipe = bundle.pipeline()
    assert isinstance(pipe, FeaturePipeline)
    assert pipe.names == splits.pipeline.names and pipe.stats == splits.pipeline.stats
    assert pipe.clip == splits.pipeline.clip and pipe.warmup == splits.pipeline.warmup
    head = bars.iloc[:3000]
    np.testing.assert_array_equal(pipe.normalize(pipe.transform(head)),
                                  splits.pipeline.normalize(splits.pipeline.transform(head)))  # fmt: skip
    assert bundle.fill_model() == splits.fill_model
    assert bundle.env_settings() == splits.env
    assert PolicyBundle.load(good, pipeline=pipe).feature_names == splits.pipeline.names


def test_summary_is_short_and_plain(good, splits):
    s = PolicyBundle.load(good).summary()
    assert s["algorithm"] == "PPO" and s["features"] == len(splits.pipeline.names)
    assert s["action_map"] == [float(p) for p in splits.env.positions]
    assert s["policy_sha256"] == file_sha256(good / POLICY_FILE)
    assert s["version_notes"] == []
    json.dumps(s)


# tampering ------------------------------------------------------------------------------------------------------


def test_one_edited_byte_in_the_policy_is_refused(good, tmp_path):
    path = copy_of(good, tmp_path)
    data = bytearray((path / POLICY_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / POLICY_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="policy.pt: changed since it was signed"):
        PolicyBundle.load(path)
    with pytest.raises(BundleError, match="policy.pt: sha256 mismatch: manifest says"):
        PolicyBundle.load(path, trust=UNSIGNED)
    problems = verify_bundle(path, trust=UNSIGNED)
    assert problems and "sha256" in problems[0]


def test_a_renamed_feature_is_refused_by_the_running_pipeline(good, tmp_path, splits):
    path = copy_of(good, tmp_path)
    names = list(splits.pipeline.names)
    edit_manifest(path, feature_names=["ret_1x", *names[1:]])
    with pytest.raises(BundleError, match=r"feature_names: bundle has \['ret_1x'.* but the running pipeline has"):
        PolicyBundle.load(path, pipeline=splits.pipeline)


def test_a_consistently_renamed_feature_is_refused_even_alone(good, tmp_path, splits):
    "Names, stats and indicator outputs edited together still fail: the indicator is rebuilt from this version's code."
    path = copy_of(good, tmp_path)
    m = json.loads((path / MANIFEST_FILE).read_text())
    names = ["ret_1x", *m["feature_names"][1:]]
    norm = m["normalization"]
    norm["stats"]["ret_1x"] = norm["stats"].pop("ret_1")
    norm["names"] = names
    norm["indicators"][0]["outputs"] = ["ret_1x"]
    edit_manifest(path, feature_names=names, normalization=norm)
    for problems in (verify_bundle(path), verify_bundle(path, splits.pipeline)):
        assert problems and problems[0].startswith("manifest.json: normalization: cannot rebuild the pipeline")
        assert "outputs ['ret_1x'] vs ['ret_1']" in problems[0]


def test_other_normalisation_stats_are_refused(good, market):
    bars, splits = market
    other = FeaturePipeline(splits.pipeline.indicators, clip=splits.pipeline.clip).fit(bars.iloc[-6000:])
    with pytest.raises(BundleError, match="normalization.stats: bundle and running pipeline differ"):
        PolicyBundle.load(good, pipeline=other)
    unfitted = FeaturePipeline(splits.pipeline.indicators, clip=splits.pipeline.clip)
    assert verify_bundle(good, unfitted) == []  # no stats to compare: names, indicators and clip match


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"schema_version": SCHEMA_VERSION + 1}, "schema_version"),
        ({"schema_version": "1"}, "schema_version"),
        ({"observation_shape": [1]}, "observation_shape"),
        ({"action_map": [0.0]}, "action_map"),
        ({"policy_sha256": "0" * 64}, "policy.pt: sha256 mismatch"),
        ({"versions": {"torch": "1.13.1"}}, "versions.torch"),
        ({"fill_model": {"latency_bars": 0}}, "fill_model"),
    ],
)
def test_bad_manifest_fields_are_named(good, tmp_path, changes, field):
    path = copy_of(good, tmp_path)
    edit_manifest(path, **changes)
    with pytest.raises(BundleError, match="manifest.json: changed since it was signed"):
        PolicyBundle.load(path)
    with pytest.raises(BundleError, match=field):
        PolicyBundle.load(path, trust=UNSIGNED)
    assert any(field in p for p in verify_bundle(path, trust=UNSIGNED))


def test_a_missing_field_is_named(good, tmp_path):
    path = copy_of(good, tmp_path)
    m = json.loads((path / MANIFEST_FILE).read_text())
    del m["data_hash"]
    (path / MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"missing fields \['data_hash'\]"):
        PolicyBundle.load(path)


@pytest.mark.parametrize("name", [POLICY_FILE, MANIFEST_FILE])
def test_a_missing_file_is_named(good, tmp_path, name):
    path = copy_of(good, tmp_path)
    (path / name).unlink()
    with pytest.raises(BundleError, match=f"{name}: missing"):
        PolicyBundle.load(path)
    assert verify_bundle(path)[0].startswith(f"{name}: missing")


def test_invalid_json_is_named(good, tmp_path):
    path = copy_of(good, tmp_path)
    (path / MANIFEST_FILE).write_text('{"schema_version": 1,')
    with pytest.raises(BundleError, match="manifest.json: invalid JSON"):
        PolicyBundle.load(path)
    (path / MANIFEST_FILE).write_text("[1, 2]")
    assert verify_bundle(path) == ["manifest.json: invalid: expected a JSON object, got list"]


def test_not_a_folder(tmp_path):
    assert verify_bundle(tmp_path / "nothing") == [f"{tmp_path / 'nothing'}: no bundle folder there"]
    with pytest.raises(BundleError, match="no bundle folder"):
        PolicyBundle.load(tmp_path / "nothing")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_policy_for_another_shape_fails_its_forward_pass(good, tmp_path, splits, models):
    "A valid TorchScript file whose network expects other inputs than the manifest declares."
    path = copy_of(good, tmp_path)
    narrow = torch.jit.trace(nn.Sequential(nn.Linear(5, 3)), torch.zeros(1, 5))
    torch.jit.save(narrow, str(path / POLICY_FILE))
    edit_manifest(path, policy_sha256=file_sha256(path / POLICY_FILE))
    width = len(splits.pipeline.names) + 3
    with pytest.raises(BundleError, match=rf"policy.pt: forward pass on zeros of shape \(2, {width}\)"):
        PolicyBundle.load(path, trust=UNSIGNED)


def test_verify_bundle_of_a_good_bundle_is_empty(good, splits):
    assert verify_bundle(good) == [] and verify_bundle(good, splits.pipeline) == []


# atomic export --------------------------------------------------------------------------------------------------


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("this head cannot run")


class SignBranch(BaseFeaturesExtractor):
    "Branches on its input: tracing bakes in one branch, so the traced policy disagrees with the model."

    def __init__(self, observation_space):
        super().__init__(observation_space, observation_space.shape[0])

    def forward(self, obs):
        # the last column is the share of the episode left: in (0, 1) on every real row, rarely on the trace's
        # zeros and Gaussian probes, so the traced branch (-obs) passes the trace check and fails the verification
        return obs if bool(((obs[:, -1] > 0) & (obs[:, -1] < 1)).float().mean() > 0.5) else -obs


def fresh(splits, **kw):
    return PPO("MlpPolicy", splits.make_vec_env("train", 2, seed=0), n_steps=32, batch_size=32, seed=0, device="cpu",
               **kw)  # fmt: skip


def test_an_untraceable_model_leaves_nothing_and_keeps_the_old_bundle(good, tmp_path, splits):
    path = copy_of(good, tmp_path, "ppo")
    before = file_sha256(path / POLICY_FILE)
    broken = fresh(splits)
    broken.policy.action_net = Boom()
    with pytest.raises(BundleError, match="failed at trace: RuntimeError: this head cannot run"):
        export_bundle(broken, splits.pipeline, splits.fill_model, splits.env, path, overwrite=True)
    with pytest.raises(BundleError, match="failed at trace"):
        export_bundle(broken, splits.pipeline, splits.fill_model, splits.env, tmp_path / "new")
    assert listing(tmp_path) == ["ppo"]
    assert PolicyBundle.load(path, splits.pipeline).manifest["policy_sha256"] == before


def test_a_mistraced_model_fails_verification_mid_way_and_leaves_nothing(good, tmp_path, splits):
    "No mocks: both files are written to the temporary folder, then the check against the model refuses them."
    path = copy_of(good, tmp_path, "ppo")
    before = file_sha256(path / POLICY_FILE)
    model = fresh(splits, policy_kwargs={"features_extractor_class": SignBranch})
    with pytest.warns(torch.jit.TracerWarning), pytest.raises(BundleError, match="failed at verify: policy.pt: picks"):
        export_bundle(model, splits.pipeline, splits.fill_model, splits.env, path, overwrite=True)
    with pytest.warns(torch.jit.TracerWarning), pytest.raises(BundleError, match="failed at verify"):
        export_bundle(model, splits.pipeline, splits.fill_model, splits.env, tmp_path / "new")
    assert listing(tmp_path) == ["ppo"]
    assert PolicyBundle.load(path, splits.pipeline).manifest["policy_sha256"] == before


def test_a_failure_mid_way_leaves_no_temp_folder_and_keeps_the_old_bundle(good, tmp_path, splits, models, monkeypatch):
    path = copy_of(good, tmp_path, "ppo")
    before = (path / MANIFEST_FILE).read_bytes()
    written = []

    def disk_full(p, manifest):
        written.extend(listing(p.parent))  # policy.pt is already in the temporary folder
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_mod, "_write_manifest", disk_full)
    with pytest.raises(BundleError, match="failed at manifest.json: OSError.*No space left"):
        export_bundle(models["A2C"], splits.pipeline, splits.fill_model, splits.env, path, overwrite=True)
    assert written == [POLICY_FILE]
    assert listing(tmp_path) == ["ppo"]
    assert (path / MANIFEST_FILE).read_bytes() == before
    assert PolicyBundle.load(path).manifest["algorithm"] == "PPO"


def test_a_failed_final_rename_restores_the_old_bundle(good, tmp_path, splits, models, monkeypatch):
    path = copy_of(good, tmp_path, "ppo")
    real = bundle_mod._rename

    def rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(bundle_mod, "_rename", rename)
    with pytest.raises(BundleError, match="failed at rename"):
        export_bundle(models["A2C"], splits.pipeline, splits.fill_model, splits.env, path, overwrite=True)
    assert listing(tmp_path) == ["ppo"]
    assert PolicyBundle.load(path).manifest["algorithm"] == "PPO"


def test_overwrite_replaces_a_bundle_only_when_asked(good, tmp_path, splits, models):
    path = copy_of(good, tmp_path, "ppo")
    with pytest.raises(BundleError, match="already exists; pass overwrite=True"):
        export_bundle(models["DQN"], splits.pipeline, splits.fill_model, splits.env, path)
    export_bundle(models["DQN"], splits.pipeline, splits.fill_model, splits.env, path, overwrite=True)
    assert PolicyBundle.load(path).manifest["algorithm"] == "DQN"
    assert listing(tmp_path) == ["ppo"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a policy bundle; refusing"):
        export_bundle(models["DQN"], splits.pipeline, splits.fill_model, splits.env, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_export_refuses_what_cannot_be_bundled(tmp_path, splits, models):
    pipe, fills = splits.pipeline, splits.fill_model
    with pytest.raises(BundleError, match="env_settings.positions"):
        export_bundle(models["PPO"], pipe, fills, EnvSettings(positions=[0.0, 1.0]), tmp_path / "a")
    with pytest.raises(BundleError, match="pipeline: not fitted"):
        export_bundle(models["PPO"], FeaturePipeline(pipe.indicators), fills, splits.env, tmp_path / "b")
    with pytest.raises(BundleError, match="metadata"):
        export_bundle(models["PPO"], pipe, fills, splits.env, tmp_path / "c", metadata={"policy_sha256": "x"})
    with pytest.raises(BundleError, match="model: expected a stable-baselines3 PPO, A2C or DQN"):
        export_bundle(object(), pipe, fills, splits.env, tmp_path / "d")
    assert listing(tmp_path) == []
