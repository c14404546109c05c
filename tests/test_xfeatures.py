"""Issue 23, deliverable 2 (cross-sectional features): against a pandas reference, batch == stream, causal."""

import numpy as np
import pandas as pd
import pytest

from intraday.panel import Basket, _log_returns
from intraday.xfeatures import CROSS_NAMES, CrossStream, cross_batch


def reference(r: np.ndarray, lookback: int, window: int) -> np.ndarray:
    "The same four features by pandas' rolling windows (an independent computation)."
    x = pd.DataFrame(np.nan_to_num(r))
    b = pd.DataFrame(r).mean(axis=1, skipna=True).fillna(0.0)
    run = x.rolling(lookback).sum()
    rel = run.sub(b.rolling(lookback).sum(), axis=0)
    rank = run.rank(axis=1, method="average").sub(1).div(x.shape[1] - 1)
    cov = x.rolling(window).cov(b)
    beta = cov.div(b.rolling(window).var(), axis=0)
    corr = x.rolling(window).corr(b)
    return np.stack([rel.to_numpy(), rank.to_numpy(), beta.to_numpy(), corr.to_numpy()], axis=-1)


def test_cross_features_match_pandas_on_a_planted_basket():
    panel = Basket("rotation", lookback=30).generate(days=1, seed=4)
    r = _log_returns(panel.field("close").to_numpy())
    got = cross_batch(r, lookback=30, window=120)
    want = reference(r, 30, 120)
    assert CROSS_NAMES == ("rel_ret", "rank", "beta", "corr")
    np.testing.assert_allclose(got[119:], want[119:], rtol=1e-6, atol=1e-9)
    assert np.isnan(got[:29, :, :2]).all() and np.isnan(got[:119, :, 2:]).all()  # the warm-ups


def test_stream_equals_batch_and_nothing_depends_on_later_bars():
    r = np.random.default_rng(7).normal(0, 0.002, (900, 5))
    r[::17, 2] = np.nan  # a symbol with missing bars
    full = cross_batch(r, 45, 200)
    s = CrossStream(5, 45, 200)
    assert np.array_equal(np.array([s.update(x) for x in r]), full, equal_nan=True)
    later = r.copy()
    later[600:] *= -3.0  # rewrite the future
    assert np.array_equal(cross_batch(later, 45, 200)[:600], full[:600], equal_nan=True)
    with pytest.raises(ValueError, match="lookback <= window"):
        CrossStream(5, 300, 200)
