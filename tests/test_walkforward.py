"""Walk-forward: no fold's test bar is seen by training, validation or selection; the chosen model is scored once."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import intraday.train
import intraday.walkforward as wfm
from intraday.cli import main
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import STATE_WIDTH, build_envs, split_embargo
from intraday.features import FeaturePipeline
from intraday.train import Trainer
from intraday.walkforward import fold_windows, run_fold, walk_forward

# four-hour episodes and features without the session VWAP (warm-up two hours, not a day): folds of a few days
SMALL = {
    "env": {"episode_len": 240},
    "features": {"session_vwap": False},
    "train": {"total_timesteps": 1024, "n_steps": 64, "batch_size": 64, "n_envs": 4, "eval_every": 256,
              "checkpoint_every": 10**6},
    "walkforward": {"folds": 3, "val_episodes": 2, "test_episodes": 2},
}  # fmt: skip


def small_settings(tmp_path, **walkforward):
    sections = {**SMALL, "walkforward": {**SMALL["walkforward"], **walkforward},
                "train": {**SMALL["train"], "runs_dir": str(tmp_path / "runs")}}  # fmt: skip
    return load_settings(environ={}, **sections)


@pytest.fixture(scope="module")
def days():
    "Three days of seeded one-minute bars."
    return synth_market(days=3, seed=11)


def embargo_of(settings):
    return split_embargo(settings.env, FeaturePipeline.from_settings(settings.features, settings.data.timeframe))


def plant(bars: pd.DataFrame, at: int, jump: float = 1.2) -> pd.DataFrame:
    "The bars with one bar's close (and high) moved by `jump`: a one-bar leak a model would notice if it saw it."
    out = bars.copy()
    c = out.columns.get_loc("close")
    out.iloc[at, c] *= jump
    out.iloc[at, out.columns.get_loc("high")] = max(out.iloc[at]["high"], out.iloc[at, c])
    return out


def best_weights(run_dir):
    "The policy weights saved as the best on validation (weights-only: no code runs on load)."
    return torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)["policy"]


def history(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["history"]


@pytest.mark.parametrize("scheme", ["rolling", "anchored"])
@pytest.mark.parametrize("folds", [2, 3, 5])
def test_fold_blocks_are_ordered_embargoed_and_chain(tmp_path, scheme, folds):
    settings = small_settings(tmp_path, scheme=scheme, folds=folds)
    emb, n = embargo_of(settings), 8 * 1440
    windows = fold_windows(n, settings, emb)
    assert len(windows) == folds and windows[-1].end == n
    for f in windows:
        b = f.blocks
        assert b["train"][1] + emb == b["val"][0] and b["val"][1] + emb == b["test"][0]
        assert b["train"][0] < b["train"][1] < b["val"][1] < b["test"][1] == f.end
        assert f.start == 0 if scheme == "anchored" else True
    tests = [f.blocks["test"] for f in windows]
    # each test block's episodes start where the previous one's ended; no test bar is evaluated twice
    assert [b[0] - a[0] for a, b in zip(tests, tests[1:])] == [480] * (folds - 1)
    if scheme == "rolling":
        assert len({f.train_end - f.start for f in windows}) == 1


def test_each_fold_fits_its_features_and_costs_on_its_own_train_block(tmp_path, days):
    settings = small_settings(tmp_path)
    folds = fold_windows(len(days), settings, embargo_of(settings))
    first, last = (build_envs(settings, days.iloc[f.start : f.end], f.cuts) for f in (folds[0], folds[-1]))
    assert first.pipeline.stats != last.pipeline.stats  # normalisation fitted per train window
    for f, splits in ((folds[0], first), (folds[-1], last)):
        assert splits.ranges()["train"] == (days.index[f.start], days.index[f.train_end - 1])
        assert splits.ranges()["test"] == (days.index[f.blocks["test"][0]], days.index[f.end - 1])


def test_too_short_a_history_is_one_clear_error(tmp_path):
    settings = small_settings(tmp_path, folds=4)
    with pytest.raises(ValueError, match=r"2000 bars are too few for 4 folds .* the first train block would have"):
        fold_windows(2000, settings, embargo_of(settings))


def test_a_planted_leak_in_the_test_block_changes_nothing_before_the_test(tmp_path, days):
    settings = small_settings(tmp_path)
    fold = fold_windows(len(days), settings, embargo_of(settings))[0]
    test_a, test_b = fold.blocks["test"]
    val_a, val_b = fold.blocks["val"]
    clean = run_fold(settings, days, fold, tmp_path / "clean")
    leak = run_fold(settings, plant(days, test_a + 100), fold, tmp_path / "leak")
    # before the test: the same validation history, the same selection, the same chosen weights
    assert history(tmp_path / "leak") == history(tmp_path / "clean")
    assert (leak["selected_at"], leak["val_sharpe"]) == (clean["selected_at"], clean["val_sharpe"])
    wa, wb = best_weights(tmp_path / "clean"), best_weights(tmp_path / "leak")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the test block itself does see it: the curves agree up to the planted bar and differ after it
    at = days.index[test_a + 100]
    pd.testing.assert_series_equal(leak["curve"].loc[: days.index[test_a + 99]],
                                   clean["curve"].loc[: days.index[test_a + 99]])  # fmt: skip
    assert not np.allclose(leak["curve"].loc[at:], clean["curve"].loc[at:])
    # positive control: the same one-bar change planted in the validation block does change the validation history
    run_fold(settings, plant(days, (val_a + val_b) // 2), fold, tmp_path / "in_val")
    assert history(tmp_path / "in_val") != history(tmp_path / "clean")


def test_the_model_selected_on_validation_is_scored_once_on_test(tmp_path, days, monkeypatch):
    settings = small_settings(tmp_path)
    fold = fold_windows(len(days), settings, embargo_of(settings))[1]
    calls = []
    real = intraday.train.evaluate

    def spy(policy, splits, split="val", *args, **kwargs):
        probe = np.random.default_rng(0).uniform(-2, 2, (256, splits.features[split].shape[1] + STATE_WIDTH))
        probe = probe.astype(np.float32)
        calls.append(
            {"split": split, "splits_hold": sorted(splits.bars), "probe": probe, "actions": policy(probe, None)}
        )
        return real(policy, splits, split, *args, **kwargs)

    monkeypatch.setattr(intraday.train, "evaluate", spy)  # the trainer's validation during fit and in finish
    monkeypatch.setattr(wfm, "evaluate", spy)  # the fold's look at the test block
    result = run_fold(settings, days, fold, tmp_path / "fold")
    splits_seen = [c["split"] for c in calls]
    assert splits_seen.count("test") == 1 and splits_seen[-1] == "test"  # once, after every other evaluation
    assert splits_seen.count("val") == result["evaluations"] + 1  # the evaluations during training, and finish's
    assert all(c["splits_hold"] == ["train", "val"] for c in calls[:-1])  # the trainer never held the test block
    window = days.iloc[fold.start : fold.end]
    blind = wfm._blind(build_envs(settings, window, fold.cuts))
    best = Trainer(settings, window.iloc[: fold.cuts[1]], tmp_path / "fold", splits=blind).best_model()  # best.pt
    assert np.array_equal(calls[-1]["actions"], best.predict(calls[-1]["probe"], deterministic=True)[0])
    lineage = json.loads((tmp_path / "fold" / "lineage.json").read_text())
    assert pd.Timestamp(lineage["data_range"]["end"]) < days.index[fold.blocks["test"][0]]  # its bars end before


def test_walk_forward_in_two_processes_chains_the_test_blocks(tmp_path, days):
    settings = small_settings(tmp_path, folds=2, trials=20)
    out = walk_forward(settings, days, tmp_path / "wf", workers=2)
    solo = run_fold(settings, days, fold_windows(len(days), settings, embargo_of(settings))[1], tmp_path / "solo")
    pd.testing.assert_series_equal(out["equity"].iloc[481:] / out["equity"].iloc[480],
                                   solo["curve"].iloc[1:] / solo["curve"].iloc[0], check_names=False,
                                   check_freq=False)  # fmt: skip
    assert out["oos"]["bars"] == 2 * 480 and out["oos"]["trials"] == 20
    lo, hi = out["oos"]["sharpe_ci_low"], out["oos"]["sharpe_ci_high"]
    assert lo < out["oos"]["sharpe"] < hi
    one = wfm.deflated_sharpe(np.diff(np.log(out["equity"].to_numpy())), 1)
    assert out["oos"]["deflated_sharpe"] < one  # twenty configurations tried deflate more than one
    saved = json.loads((tmp_path / "wf" / "walk_forward.json").read_text())
    assert [f["fold"] for f in saved["folds"]] == [0, 1] and saved["walkforward"]["trials"] == 20
    page = (tmp_path / "wf" / "report.html").read_text()
    assert "out of sample (chained test blocks)" in page and "deflated Sharpe" in page


def test_cli_walkforward_replaces_its_output(tmp_path, capsys):
    out = tmp_path / "wfcli"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    overrides = json.dumps({k: v for k, v in SMALL.items() if k != "walkforward"})
    code = main(["walkforward", "--out", str(out), "--folds", "2", "--workers", "1", "--trials", "3",
                 "-p", "days", "3", "-p", "overrides", overrides])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    assert not (out / "stale.txt").exists() and (out / "report.html").is_file()
    assert "out of sample" in text and "deflated Sharpe" in text and "fold" in text
