"""Issue 23, deliverable 1 (data): a panel of several symbols on one UTC index (a missing bar is a stated gap, never a
filled price), and the multi-asset zoo: factor structure, planted lead-lag / reversal / rotation with their oracles
and placebos."""

import numpy as np
import pandas as pd
import pytest

from intraday.data import BarsError, synth_market
from intraday.panel import KINDS, Basket, Panel, _log_returns, make_panel


def oracle_t(b: Basket, days: float, seed: int) -> float:
    "t-statistic of the oracle's mean per-bar gross log return over a fresh draw (weights held over the next bar)."
    panel = b.generate(days=days, seed=seed)
    x = (b.oracle(panel).to_numpy()[:-1] * _log_returns(panel.field("close").to_numpy())[1:]).sum(1)
    return float(x.mean() / x.std() * np.sqrt(len(x)))


def test_a_symbol_missing_bars_is_nan_there_and_listed():
    a = synth_market(days=0.05, seed=1)  # 72 bars
    b = synth_market(days=0.05, seed=2).drop(index=a.index[10:13])
    c = synth_market(days=0.05, seed=3, start="2024-01-01 00:05")  # starts 5 bars late
    p = make_panel({"AAA/USDT": a, "BBB/USDT": b, "CCC/USDT": c})
    assert isinstance(p, Panel) and p.index.tz is not None and len(p.index) == 77
    assert p.missing.sum().to_dict() == {"AAA/USDT": 5, "BBB/USDT": 8, "CCC/USDT": 5}
    g = p.gaps()
    rows = g[g.symbol == "BBB/USDT"][["first_missing", "missing"]].to_records(index=False).tolist()
    assert rows == [(a.index[10], 3), (p.index[-5], 5)]
    closes = p.field("close")
    assert closes["BBB/USDT"].iloc[10:13].isna().all()  # never the last close carried forward
    assert closes.loc[a.index[20], "AAA/USDT"] == a["close"].iloc[20]


def test_bad_bars_are_refused_naming_the_symbol():
    bad = synth_market(days=0.01, seed=1)
    bad.iloc[3, bad.columns.get_loc("high")] = -1.0
    with pytest.raises(BarsError, match="symbol ETH/USDT"):
        make_panel({"BTC/USDT": synth_market(days=0.01, seed=2), "ETH/USDT": bad})
    with pytest.raises(ValueError, match="no symbols"):
        make_panel({})


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_planted_basket_pays_its_oracle_and_its_placebo_does_not(kind):
    real = [oracle_t(Basket(kind, alpha=0.05), days=5, seed=s) for s in (11, 12, 13)]
    placebo = [oracle_t(Basket(kind, alpha=0.0), days=5, seed=s) for s in (11, 12, 13)]
    assert min(real) > 2.0, real
    assert max(abs(t) for t in placebo) < 2.5, placebo


def test_the_basket_has_a_factor_structure_and_its_oracle_is_causal():
    b = Basket("rotation", lookback=30, betas=(1.0, 0.5, 1.5))
    p = b.generate(days=3, seed=2)
    r = _log_returns(p.field("close").to_numpy())[1:]
    c = np.corrcoef(r.T)
    assert (c[np.triu_indices(3, 1)] > 0.2).all(), c
    vol = r.std(axis=0)
    assert vol[2] > vol[0] > vol[1]  # higher beta, more market risk
    cut = make_panel({s: x.iloc[:2000] for s, x in p.bars.items()})
    np.testing.assert_array_equal(b.oracle(cut).to_numpy(), b.oracle(p).to_numpy()[:2000])
    w = b.oracle(p)
    assert ((w == 0) | (w == 1)).all(axis=None) and set(w.sum(axis=1).round(9)) <= {0.0, 1.0}  # all in the leader
    same = Basket("rotation", lookback=30, betas=(1.0, 0.5, 1.5)).generate(days=3, seed=2)
    pd.testing.assert_frame_equal(same.field("close"), p.field("close"))  # seeded


def test_basket_settings_are_checked():
    with pytest.raises(ValueError, match="one of"):
        Basket("pairs")
    with pytest.raises(ValueError, match="one beta per symbol"):
        Basket("reversal", betas=(1.0, 1.0))


def test_cli_basket_synth_check_info(tmp_path, monkeypatch, capsys):
    from conftest import ROOT

    from intraday.cli import main
    from intraday.panel import read_panel

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTRADAY_SETTINGS", str(ROOT / "settings.ini"))
    monkeypatch.setenv("INTRADAY__DATA__DAYS", "2")
    assert main(["data", "synth", "--basket", "rotation"]) == 0
    assert (
        "wrote 2,880 1m bars of 3 symbols (AAA/USDT, BBB/USDT, CCC/USDT; the rotation basket" in capsys.readouterr().out
    )
    path = tmp_path / "data" / "basket_rotation.parquet"
    assert main(["data", "check", str(path)]) == 0 and "OK" in capsys.readouterr().out
    assert main(["data", "info", str(path)]) == 0
    info = capsys.readouterr().out
    assert "basket     rotation" in info and "BBB/USDT   2,880 bars" in info
    args = [
        "data",
        "synth",
        "--basket",
        "lead_lag",
        "--symbols",
        "BTC/USDT,ETH/USDT",
        "--alpha",
        "0.2",
        "--out",
        "l.csv",
    ]
    assert main(args) == 0 and read_panel(tmp_path / "l.csv").symbols == ["BTC/USDT", "ETH/USDT"]
    capsys.readouterr()
    assert main(["data", "synth", "--basket", "rotation", "--symbols", "BTC/USDT", "--out", "x.csv"]) == 2
    assert "two or more distinct symbols" in capsys.readouterr().err
    bad = (tmp_path / "l.csv").read_text().splitlines()
    cols = bad[1].split(",")
    cols[3] = "-5"  # a high below the low, in the first symbol's first row
    (tmp_path / "bad.csv").write_text("\n".join([bad[0], ",".join(cols), *bad[2:]]))
    assert main(["data", "check", str(tmp_path / "bad.csv")]) == 1
    out = capsys.readouterr()
    assert "bad.csv [BTC/USDT]" in out.out + out.err
