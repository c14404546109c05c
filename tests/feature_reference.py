"""Plain-pandas reference of every default feature: textbook definitions with rolling/ewm, no numba.

Used by the tests (each indicator against its definition) and by the benchmark (speed of the same features)."""

import numpy as np
import pandas as pd


def wilder(x: pd.Series, n: int) -> pd.Series:
    "Wilder smoothing: the first value is the mean of the first n values of x (from x's second row), then EWM 1/n."
    seeded = x.copy()
    seeded.iloc[n] = x.iloc[1 : n + 1].mean()
    seeded.iloc[:n] = np.nan
    return seeded.iloc[n:].ewm(alpha=1 / n, adjust=False).mean().reindex(x.index)


def reference_features(bars: pd.DataFrame, fs) -> pd.DataFrame:
    "The features of a `FeatureSettings` computed with pandas, in the pipeline's column order."
    o, h, lo, c, v = (bars[k] for k in ("open", "high", "low", "close", "volume"))
    logc = np.log(c)
    r = logc.diff()
    out = {}
    for n in fs.returns:
        out[f"ret_{n}"] = logc.diff(n)
    for n in fs.ema:
        e = c.ewm(span=n, adjust=False).mean()
        out[f"ema_{n}"] = np.log(c / e).where(np.arange(len(c)) >= n - 1)
    for n in fs.momentum:
        out[f"mom_{n}"] = r.fillna(0.0).ewm(span=n, adjust=False).mean().where(np.arange(len(c)) >= n)
    for n in fs.rsi:
        d = c.diff()
        ag, al = wilder(d.clip(lower=0), n), wilder((-d).clip(lower=0), n)
        out[f"rsi_{n}"] = 100 - 100 / (1 + ag / al)
    for n in fs.atr:
        pc = c.shift(1)
        tr = pd.concat([h - lo, (h - pc).abs(), (lo - pc).abs()], axis=1).max(axis=1, skipna=False)
        out[f"atr_{n}"] = wilder(tr, n) / c
    tp = (h + lo + c) / 3
    for n in fs.vwap:
        out[f"vwap_{n}"] = np.log(c / ((tp * v).rolling(n).sum() / v.rolling(n).sum()))
    for n in fs.realized_vol:
        out[f"rv_{n}"] = r.rolling(n).std()
    for n in fs.range_vol:
        hl2 = np.log(h / lo) ** 2
        out[f"parkinson_{n}"] = np.sqrt(hl2.rolling(n).mean() / (4 * np.log(2)))
        gk = 0.5 * hl2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
        out[f"gk_{n}"] = np.sqrt(gk.rolling(n).mean().clip(lower=0))
    for n in fs.volume_z:
        out[f"volz_{n}"] = (v - v.rolling(n).mean()) / v.rolling(n).std()
    for n in fs.kyle_lambda:
        x = np.sign(c.diff()) * v
        out[f"kyle_{n}"] = r.rolling(n).cov(x) / x.rolling(n).var()
    for n in fs.amihud:
        out[f"amihud_{n}"] = (r.abs() / (c * v) * 1e6).rolling(n).mean()
    if fs.session_vwap:
        day = bars.index.floor("D")
        svwap = (tp * v).groupby(day).cumsum() / v.groupby(day).cumsum()
        partial = day == day[0] if bars.index[0] != day[0] else np.zeros(len(c), bool)
        out["vwap_session"] = np.log(c / svwap).mask(partial)
    if fs.calendar:
        secs = bars.index.as_unit("s").asi8
        tod = (secs % 86400) / 86400
        dow = bars.index.day_of_week / 7
        for name, val in (("tod_sin", np.sin(2 * np.pi * tod)), ("tod_cos", np.cos(2 * np.pi * tod)),
                          ("dow_sin", np.sin(2 * np.pi * dow)), ("dow_cos", np.cos(2 * np.pi * dow))):  # fmt: skip
            out[name] = pd.Series(np.asarray(val), index=bars.index)
    if fs.adaptive:
        n, fast, slow = fs.adaptive
        er = (c - c.shift(n)).abs() / c.diff().abs().rolling(n).sum()
        rs = r.rolling(slow).std()
        valid = np.arange(len(c)) >= max(n, slow)
        out[f"er_{n}"] = er.where(valid)
        out[f"volregime_{fast}_{slow}"] = np.log(r.rolling(fast).std() / rs).where(valid)
        out[f"adamom_{n}"] = (logc.diff(n) / (rs * np.sqrt(n)) * er).where(valid)
    tod = (bars.index.as_unit("s").asi8 % 86400) / 86400
    for k in fs.harmonics:
        out[f"tod_sin{k}"] = pd.Series(np.sin(2 * np.pi * k * tod), index=bars.index)
        out[f"tod_cos{k}"] = pd.Series(np.cos(2 * np.pi * k * tod), index=bars.index)
    return pd.DataFrame(out, index=bars.index)
