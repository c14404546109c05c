"""Basket bundles (issue 23, item 5): the manifest lists the instruments in order, verify refuses another basket or
another order, the bundle picks what the trained model picks on the env's own observations, and the portfolio
backtester runs it on streamed features equal to the batch ones."""

import json
import shutil

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from stable_baselines3 import PPO

from intraday.basket import build_basket_envs
from intraday.basket_bundle import BundleWeights, basket_block, bundle_backtester, export_basket_bundle
from intraday.bundle import BundleError, PolicyBundle, export_bundle, verify_bundle
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs
from intraday.panel import Basket
from intraday.signing import Trust
from intraday.xfeatures import cross_batch

PANEL = Basket("rotation", alpha=0.1).generate(days=6, seed=4)
SETTINGS = load_settings(environ={}, env={"episode_len": 240})
KEY = Ed25519PrivateKey.generate()
TRUST = Trust.of(KEY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A small PPO on the basket env, its splits and its exported bundle (shared by the module's tests)."
    torch.set_num_threads(1)
    splits = build_basket_envs(SETTINGS, PANEL)
    model = PPO("MlpPolicy", splits.make_vec_env("train", 4, seed=0), n_steps=128, batch_size=64, seed=0, device="cpu")
    model.learn(1024)
    folder = export_basket_bundle(model, splits, tmp_path_factory.mktemp("bundles") / "basket", {"seed": 0}, key=KEY)
    return model, splits, folder


def test_the_manifest_lists_the_instruments_and_verify_refuses_another_basket(trained):
    _, splits, folder = trained
    m = json.loads((folder / "manifest.json").read_text())
    assert m["basket"]["instruments"] == splits.symbols == ["AAA/USDT", "BBB/USDT", "CCC/USDT"]
    assert m["basket"] == basket_block(splits) and m["fill_model"] == m["basket"]["fill_models"][0]
    assert verify_bundle(folder, splits.pipeline, TRUST, splits.symbols) == []
    swapped = ["BBB/USDT", "AAA/USDT", "CCC/USDT"]
    (why,) = verify_bundle(folder, splits.pipeline, TRUST, swapped)
    assert why.startswith("manifest.json: basket.instruments:") and "in another order" in why
    assert "other instruments" in verify_bundle(folder, trust=TRUST, instruments=["AAA/USDT", "BBB/USDT"])[0]
    with pytest.raises(BundleError, match="in another order"):
        PolicyBundle.load(folder, trust=TRUST, instruments=swapped)
    with pytest.raises(BundleError, match="in another order"):
        BundleWeights(PolicyBundle.load(folder, trust=TRUST), swapped)
    b = PolicyBundle.load(folder, splits.pipeline, TRUST, splits.symbols)
    assert b.summary()["instruments"] == splits.symbols and "3 instruments" in repr(b)
    with pytest.raises(BundleError, match="use act_basket"):
        b.act(np.zeros(b._nf), np.zeros(3))
    with pytest.raises(ValueError, match=r"act_basket needs raw features \(3, "):
        b.act_basket(np.zeros((2, b._nf)), np.zeros((2, 3)))


def test_the_bundle_picks_what_the_model_picks_on_the_envs_own_observations(trained):
    model, splits, folder = trained
    bundle = PolicyBundle.load(folder, splits.pipeline, TRUST, splits.symbols)
    env = splits.make_env("test")
    obs, _ = env.reset(options={"start": splits.episode_starts("test")[0]})
    bars = splits.mkt["test"]
    # the raw inputs of the same bars: each symbol's features, the cross features of the basket's log returns
    full = {s: PANEL.bars[s].loc[splits.bars["test"].index] for s in splits.symbols}
    everything = {s: PANEL.bars[s] for s in splits.symbols}
    raw = {s: splits.pipeline.transform(everything[s]).loc[full[s].index].to_numpy() for s in splits.symbols}
    close = PANEL.field("close").to_numpy()
    xr = cross_batch(np.vstack([np.zeros((1, 3)), np.diff(np.log(close), axis=0)]), *splits.cross)
    at = PANEL.index.get_indexer(splits.bars["test"].index)
    picked, width = [], len(splits.names) + 3
    for _ in range(SETTINGS.env.episode_len - 1):
        action = model.predict(obs, deterministic=True)[0]
        i = env.unwrapped._core.clock[0, 0]  # the env's bar
        state = obs.reshape(3, width)[:, -3:].astype(np.float64)
        x = np.hstack([np.stack([raw[s][i] for s in splits.symbols]), xr[at[i]]])
        picked.append((bundle.act_basket(x, state), action))
        obs, *_ = env.step(action)
    ours, theirs = np.array([p[0] for p in picked]), np.array([p[1] for p in picked])
    assert len(np.unique(theirs)) > 1  # the model does not hold one action throughout: the check can fail
    np.testing.assert_array_equal(ours, theirs)
    assert bars.shape[1] == 3


def test_the_backtest_streams_the_features_training_saw(trained):
    _, splits, folder = trained
    bundle = PolicyBundle.load(folder, trust=TRUST)
    policy, seen = BundleWeights(bundle, splits.symbols), []

    def spy(i, bars, features, state):
        seen.append((i, features.copy(), state.copy()))
        return policy(i, bars, features, state)

    start = len(PANEL.index) - 600
    res = bundle_backtester(bundle).run(PANEL, spy, start=start)
    raw = np.stack([bundle.pipeline().transform(PANEL.bars[s]).to_numpy() for s in splits.symbols], axis=1)
    close = PANEL.field("close").to_numpy()
    xr = cross_batch(np.vstack([np.zeros((1, 3)), np.diff(np.log(close), axis=0)]), *policy.cross)
    batch = np.concatenate([raw, xr], axis=2)
    for (i, f, st), a in zip(seen, policy.actions, strict=True):
        np.testing.assert_allclose(f, batch[i], rtol=1e-9, atol=1e-12)
        assert (bundle.act_basket(batch[i], st) == a).all()
    assert len(seen) == 600 - bundle.fill_model().latency_bars and len(res.fills) > 0
    # the env's cap on the chosen levels: gross 1
    assert (res.weights.abs().sum(axis=1) <= 1.05).all()  # marks drift a little after the fills


def test_refusals_name_what_is_wrong(trained, tmp_path):
    model, splits, folder = trained
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    mf = json.loads((edited / "manifest.json").read_text())
    mf["basket"]["instruments"] = mf["basket"]["instruments"][::-1]
    (edited / "manifest.json").write_text(json.dumps(mf))
    assert any("changed since it was signed" in p for p in verify_bundle(edited, trust=TRUST))
    mf["basket"]["cross"]["window"] = 10  # below its lookback: read even when unsigned bundles are allowed
    (edited / "manifest.json").write_text(json.dumps(mf))
    assert any(
        p.startswith("manifest.json: basket.cross") for p in verify_bundle(edited, trust=Trust(allow_unsigned=True))
    )
    continuous = build_basket_envs(SETTINGS, PANEL, continuous=True)
    with pytest.raises(BundleError, match="continuous"):
        export_basket_bundle(model, continuous, tmp_path / "box", key=KEY)
    # a single-instrument bundle is refused by a basket, and a basket bundle by a single-instrument runner
    one = build_envs(SETTINGS, synth_market(days=12, seed=9))
    m1 = PPO("MlpPolicy", one.make_vec_env("train", 2, seed=0), n_steps=64, batch_size=64, seed=0, device="cpu")
    single = export_bundle(m1, one.pipeline, one.fill_model, one.env, tmp_path / "one", key=KEY)
    assert "trades one instrument" in verify_bundle(single, trust=TRUST, instruments=splits.symbols)[0]
    with pytest.raises(BundleError, match="BundleWeights runs basket bundles"):
        BundleWeights(PolicyBundle.load(single, trust=TRUST), splits.symbols)
    assert "other instruments" in verify_bundle(folder, trust=TRUST, instruments=["BTC/USDT"])[0]
    with pytest.raises(BundleError, match=r"3 instruments x \(\d+ features"):  # a one-symbol model is no basket
        export_bundle(m1, one.pipeline, one.fill_model, one.env, tmp_path / "x", key=KEY, basket=basket_block(splits))
