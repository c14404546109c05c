import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import intraday.data as data
from intraday.data import (
    BarsError,
    BarsFileError,
    BarStore,
    StoreError,
    bar_problems,
    gap_report,
    infer_timeframe,
    problem_lines,
    read_bars,
    read_parquet_meta,
    validate_bars,
    write_bars,
)


def rules(df):
    return {(p.row, p.column, p.rule) for p in bar_problems(df)}


def test_synthetic_bars_satisfy_contract(month):
    assert validate_bars(month) is month
    assert list(month.columns) == ["open", "high", "low", "close", "volume"]
    assert str(month.index.tz) == "UTC" and month.index.name == "ts"


@pytest.mark.parametrize(
    "row,column,value,rule",
    [
        (7, "close", np.nan, "NaN or not a number"),
        (8, "volume", -1.0, "negative volume"),
        (9, "high", 1.0, "high < low"),
        (11, "open", -5.0, "price must be > 0"),
        (12, "open", np.inf, "infinite"),
    ],
)
def test_each_value_rule_located(bars, row, column, value, rule):
    bars.iloc[row, bars.columns.get_loc(column)] = value
    assert (row, column, rule) in rules(bars)


def test_high_below_open_close(bars):
    bars.iloc[5, 1] = max(bars.iloc[5, 0], bars.iloc[5, 3]) * 0.999999
    bars.iloc[5, 2] = bars.iloc[5, 1] * 0.99
    assert (5, "high", "high < max(open, close)") in rules(bars)


def test_low_above_open_close(bars):
    bars.iloc[6, 2] = min(bars.iloc[6, 0], bars.iloc[6, 3]) * 1.000001
    bars.iloc[6, 1] = bars.iloc[6, 2] * 1.01
    assert (6, "low", "low > min(open, close)") in rules(bars)


def test_index_rules(bars):
    idx = bars.index.to_numpy().copy()
    idx[3], idx[4] = idx[4], idx[3]
    idx[20] = idx[19]
    b = bars.set_axis(pd.DatetimeIndex(idx, name="ts"))
    got = rules(b)
    assert (4, "ts", "earlier than the previous bar (unsorted)") in got
    assert (20, "ts", "duplicate timestamp") in got
    naive = bars.tz_convert(None)
    assert any("tz-aware UTC" in p.rule for p in bar_problems(naive))
    other = bars.tz_convert("Europe/Berlin")
    assert any("tz=Europe/Berlin" in p.rule for p in bar_problems(other))
    assert any("named 'ts'" in p.rule for p in bar_problems(bars.rename_axis("time")))
    assert any("DatetimeIndex" in p.rule for p in bar_problems(bars.reset_index(drop=True)))
    nat = bars.index.to_series().copy()
    nat.iloc[2] = pd.NaT
    assert (2, "ts", "missing or unparseable timestamp") in rules(bars.set_axis(pd.DatetimeIndex(nat, name="ts")))


def test_column_rules(bars):
    got = rules(bars.drop(columns=["volume"]))
    assert (None, "volume", "missing column") in got
    as_int = bars.assign(volume=bars.volume.round().astype(np.int64))
    assert (None, "volume", "must be float64, got int64") in rules(as_int)
    assert bar_problems([1, 2])[0].rule.startswith("expected a pandas DataFrame")


def test_one_error_lists_every_problem(bars):
    bars.iloc[1:60, 3] = np.nan
    with pytest.raises(BarsError) as ei:
        validate_bars(bars, "feed.csv")
    e = ei.value
    assert len(e.problems) == 59
    msg = str(e)
    assert msg.startswith("feed.csv: 59 problem(s) in bars:")
    assert "row 1 (2024-01-01 00:01:00+00:00): close: NaN or not a number" in msg
    assert msg.endswith("... and 9 more problems")  # the first 50 listed


def test_gap_report_and_timeframe(month):
    b = month.iloc[:600].drop(month.index[[10, 11, 12, 300]])
    g = gap_report(b)
    assert g.missing.tolist() == [3, 1]
    assert g.first_missing.iloc[0] == month.index[10] and g.last_missing.iloc[0] == month.index[12]
    assert gap_report(month.iloc[:100], "1m").empty
    five = month.iloc[::5]
    assert infer_timeframe(five) == "5m" and gap_report(five).empty
    assert gap_report(five, "1m").missing.sum() == 4 * (len(five) - 1)
    with pytest.raises(ValueError, match="at least 2 bars"):
        infer_timeframe(month.iloc[:1])
    with pytest.raises(ValueError, match="no positive step"):
        infer_timeframe(month.iloc[[0, 0]])


def write_bad_frame(bars):
    "One duplicate timestamp, one NaN close and one bar with high < low."
    bad = bars.iloc[:50].copy()
    idx = bad.index.to_numpy().copy()
    idx[10] = idx[9]
    bad.index = pd.DatetimeIndex(idx, name="ts")
    bad.iloc[20, 3] = np.nan
    bad.iloc[30, 1] = bad.iloc[30, 2] * 0.5
    return bad


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_bad_file_reports_all_three(tmp_path, bars, suffix):
    bad = write_bad_frame(bars)
    path = tmp_path / f"bad{suffix}"
    if suffix == ".csv":
        bad.to_csv(path)
    else:
        pq.write_table(pa.Table.from_pandas(bad), path)
    got = rules(read_bars(path))
    assert {(10, "ts", "duplicate timestamp"), (20, "close", "NaN or not a number"), (30, "high", "high < low")} <= got
    with pytest.raises(BarsError, match="bad"):
        read_bars(path, validate=True)


def test_csv_variants(tmp_path, bars):
    ms = bars.iloc[:5].copy()
    ms.index = ms.index.as_unit("ms").asi8
    ms.index.name = "Timestamp"
    ms.columns = [c.upper() for c in ms.columns]
    ms.to_csv(tmp_path / "ms.csv")
    got = read_bars(tmp_path / "ms.csv", validate=True)
    pd.testing.assert_frame_equal(got, bars.iloc[:5], check_index_type=False, check_freq=False)
    assert got.index.equals(bars.index[:5])
    iso = tmp_path / "iso.csv"
    iso.write_text(
        "date,open,high,low,close,volume\n2024-01-01T01:00:00+01:00,1,2,0.5,1.5,3\nnot-a-date,1,2,0.5,1.5,3\n"
    )
    got = read_bars(iso)
    assert got.index[0] == pd.Timestamp("2024-01-01T00:00:00Z")
    assert (1, "ts", "missing or unparseable timestamp") in rules(got)


def test_unreadable_files_named(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BarsFileError, match="junk.parquet: cannot read as parquet"):
        read_bars(junk)
    with pytest.raises(BarsFileError, match="not a readable parquet"):
        read_parquet_meta(junk)
    with pytest.raises(BarsFileError, match="no such file"):
        read_bars(tmp_path / "none.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(BarsFileError, match="unknown bars file type"):
        read_bars(tmp_path / "x.json")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BarsFileError, match="empty.csv"):
        read_bars(tmp_path / "empty.csv")
    (tmp_path / "nots.csv").write_text("open,high,low,close,volume\n1,1,1,1,1\n")
    with pytest.raises(BarsFileError, match="no timestamp column"):
        read_bars(tmp_path / "nots.csv")
    (tmp_path / "nocol.csv").write_text("ts,open,close\n2024-01-01,1,1\n")
    with pytest.raises(BarsFileError, match="missing column.*high, low, volume"):
        read_bars(tmp_path / "nocol.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_read_round_trip(tmp_path, bars, suffix):
    path = write_bars(bars, tmp_path / f"b{suffix}", meta={"symbol": "SYN/USDT"})
    back = read_bars(path, validate=True)
    np.testing.assert_allclose(back.to_numpy(), bars.to_numpy(), rtol=1e-15)
    assert back.index.equals(bars.index)
    if suffix == ".parquet":
        assert read_parquet_meta(path) == {"schema": 1, "symbol": "SYN/USDT"}
    with pytest.raises(BarsFileError, match="unknown bars file type"):
        write_bars(bars, tmp_path / "b.xlsx")


def test_failed_write_keeps_old_file(tmp_path, bars, monkeypatch):
    path = write_bars(bars, tmp_path / "b.parquet")
    before = path.read_bytes()

    def crash(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(data.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_bars(bars.iloc[:10], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["b.parquet"]
    bad = bars.copy()
    bad.iloc[0, 3] = np.nan
    with pytest.raises(BarsError):
        write_bars(bad, path)
    assert path.read_bytes() == before


KEY = ("binance", "BTC/USDT", "1m")


def test_store_append_dedups_and_new_copy_wins(tmp_path, month):
    store = BarStore(tmp_path)
    assert store.append(month.iloc[:100], *KEY) == 100
    newer = month.iloc[90:150].copy()
    newer["volume"] += 1e6
    assert store.append(newer, *KEY) == 50
    got = store.load(*KEY)
    assert len(got) == 150 and got.index.is_monotonic_increasing
    assert (got.volume.iloc[90:150] >= 1e6).all() and (got.volume.iloc[:90] < 1e5).all()
    with pytest.raises(BarsError, match="unsorted"):  # appended bars must satisfy the contract themselves
        store.append(month.iloc[150:160].iloc[::-1], *KEY)
    assert len(store.load(*KEY)) == 150
    assert store.keys() == [KEY]
    assert store.path(*KEY) == tmp_path / "binance" / "BTC-USDT" / "1m.parquet"


def test_store_refuses_bad_files_and_loses_nothing(tmp_path, month):
    store = BarStore(tmp_path)
    with pytest.raises(StoreError, match="no bars stored for binance BTC/USDT 1m"):
        store.load(*KEY)
    store.save(month.iloc[:100], *KEY)
    before = store.path(*KEY).read_bytes()
    bad = month.iloc[100:110].copy()
    bad.iloc[3, 3] = np.nan
    with pytest.raises(BarsError):
        store.append(bad, *KEY)
    assert store.path(*KEY).read_bytes() == before
    # a file copied under another key is refused, not mixed in
    other = store.path("binance", "ETH/USDT", "1m")
    other.parent.mkdir(parents=True)
    other.write_bytes(before)
    with pytest.raises(StoreError, match="refusing to mix keys"):
        store.load("binance", "ETH/USDT", "1m")
    # a parquet file not written by the store
    foreign = store.path("kraken", "BTC/USD", "1m")
    foreign.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(month.iloc[:5]), foreign)
    with pytest.raises(StoreError, match="foreign parquet file"):
        store.load("kraken", "BTC/USD", "1m")
    corrupt = store.path("kraken", "ETH/USD", "1m")
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(before[: len(before) // 2])
    with pytest.raises(StoreError, match="corrupt store file"):
        store.load("kraken", "ETH/USD", "1m")
    with pytest.raises(StoreError, match="corrupt"):
        store.append(month.iloc[:3], "kraken", "ETH/USD", "1m")
    assert corrupt.read_bytes() == before[: len(before) // 2]
    assert store.keys() == [KEY]
    with pytest.raises(ValueError, match="timeframe"):
        store.path("binance", "BTC/USDT", "1x")


def test_data_refuses_naive_csv_timestamps_without_tz(tmp_path, bars):
    "Issue 20: naive CSV timestamps were taken as UTC without a word."
    path = tmp_path / "naive.csv"
    naive = bars.iloc[:5].copy()
    naive.index = naive.index.tz_localize(None)
    naive.to_csv(path)
    with pytest.raises(BarsFileError, match=r"naive.csv: column 'ts' has times without a zone .*--tz UTC"):
        read_bars(path)
    got = read_bars(path, tz="UTC", validate=True)
    assert got.index.equals(bars.index[:5]) and "taken as UTC" in got.attrs["timestamps"]
    paris = read_bars(path, tz="Europe/Paris")  # winter: one hour ahead of UTC
    assert paris.index.equals(bars.index[:5] - pd.Timedelta("1h"))
    with pytest.raises(BarsFileError, match="cannot read times without a zone as 'Mars/Olympus'"):
        read_bars(path, tz="Mars/Olympus")
    zoned = tmp_path / "zoned.csv"
    bars.iloc[:5].to_csv(zoned)  # '+00:00' on every row: no tz needed, and a tz changes nothing
    assert read_bars(zoned).index.equals(bars.index[:5]) and read_bars(zoned, tz="Asia/Tokyo").index.equals(
        bars.index[:5]
    )


@pytest.mark.parametrize(("unit", "scale"), [("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)])
def test_data_infers_epoch_unit_from_magnitude(tmp_path, bars, unit, scale):
    "Issue 20: epoch seconds were read as milliseconds, then failed with 'cannot infer the timeframe'."
    path = tmp_path / f"{unit}.csv"
    ep = bars.iloc[:5].copy()
    ep.index = pd.Index(bars.index[:5].as_unit("ns").asi8 // scale, name="open_time")
    ep.to_csv(path)
    messages = []
    sink = data.logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    data.logger.enable("intraday")
    try:
        got = read_bars(path, validate=True)
    finally:
        data.logger.remove(sink)
    assert got.index.equals(bars.index[:5])
    assert got.attrs["timestamps"].startswith(f"epoch {unit} (column 'open_time'")
    assert any(f"read as epoch {unit}" in m and str(path) in m for m in messages)


@pytest.mark.parametrize("values", [[1, 2, 3], [1_700_000_000, 1_700_000_000_000], [-1_700_000_000, 1_700_000_060]])
def test_data_impossible_epoch_magnitude_names_file_and_column(tmp_path, values):
    path = tmp_path / "odd.csv"
    rows = "".join(f"{v},1,2,0.5,1.5,3\n" for v in values)
    path.write_text("timestamp,open,high,low,close,volume\n" + rows)
    with pytest.raises(BarsFileError, match=r"odd.csv: column 'timestamp' holds numbers from .* not epoch timestamps"):
        read_bars(path)


def test_data_problem_listing_capped_at_50():
    probs = [f"p{i}" for i in range(3_000_000)]
    lines = problem_lines(probs, prefix="f.csv: ")
    assert len(lines) == 51 and lines[0] == "f.csv: p0" and lines[-1] == "... and 2,999,950 more problems"
    assert problem_lines(probs[:50]) == probs[:50]
