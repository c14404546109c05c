import pytest

from intraday.audit import LeakyPipeline, audit, causality_check
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.features import FeaturePipeline

BARS = synth_market(days=10, seed=2)
PIPE = FeaturePipeline.from_settings(load_settings(environ={}).features)


def test_causality_check_passes_honest_and_flags_leaky_features():
    ok = causality_check(PIPE, BARS.iloc[:4000], n_points=8)
    assert ok["passed"] and ok["max_abs_diff"] == 0.0 and ok["leaky_features"] == []
    bad = causality_check(LeakyPipeline(PIPE, "mom_30"), BARS.iloc[:4000], n_points=8)
    assert not bad["passed"] and bad["leaky_features"] == ["mom_30"] and bad["max_abs_diff"] > 0
    with pytest.raises(ValueError, match="no feature 'nope'"):
        LeakyPipeline(PIPE, "nope")
    with pytest.raises(RuntimeError, match="cannot stream"):
        LeakyPipeline(PIPE).stream()


def test_audit_verdicts_with_a_small_budget():
    train = {"total_timesteps": 2048, "n_envs": 4, "n_steps": 128, "batch_size": 128, "eval_every": 1024}
    settings = load_settings(environ={}, env={"episode_len": 240}, train=train)
    report = audit(settings, BARS)
    v = report.verdicts
    assert v["causality"].startswith("PASS") and v["positive control"].startswith("PASS")
    assert report.control["causality"]["leaky_features"] == ["ret_1"]
    assert report.control["sharpe"] > report.honest["sharpe"]  # the leak makes the policy look brilliant
    assert v["placebo"].startswith("PASS") == (not report.placebo["t_stat"] >= 2)  # NaN (no trade): no edge
    assert report.passed == all(x.startswith("PASS") for x in v.values())
