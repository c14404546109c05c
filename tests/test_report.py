import plotly.graph_objects as go

from intraday.report import intraday_profile, market_figure, write_report


def test_profile_is_u_shaped(month):
    prof = intraday_profile(month, bucket_minutes=60)
    assert len(prof) == 24 and list(prof.columns) == ["abs_return", "volume"]
    mid = prof.iloc[10:14].mean()
    assert (prof.iloc[0] > 1.5 * mid).all() and (prof.iloc[23] > 1.5 * mid).all()


def test_market_figure_shows_requested_day(month):
    fig = market_figure(month, "t", day="2024-01-05")
    candles, vol, volume = fig.data
    assert isinstance(candles, go.Candlestick) and len(candles.x) == 1440
    assert str(candles.x[0]).startswith("2024-01-05 00:00")
    assert len(vol.x) == 48 and len(volume.x) == 48
    default = market_figure(month.iloc[: 3 * 1440])
    assert str(default.data[0].x[0]).startswith("2024-01-02")  # the last full day


def test_report_is_self_contained_and_atomic(tmp_path, month):
    figs = [market_figure(month.iloc[:2880]), go.Figure(go.Scatter(y=[1, 2, 3]))]
    path = write_report(figs, tmp_path / "r" / "report.html", "title <x>", "<p>summary</p>")
    html = path.read_text()
    assert len(html) > 3_000_000 and "<script src=" not in html  # plotly.js is inline: works offline
    assert "<title>title &lt;x&gt;</title>" in html
    assert html.count("Plotly.newPlot") == 2 and "<p>summary</p>" in html
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


def test_backtest_report_has_every_part(tmp_path, month):
    from intraday.backtest import Backtester, BuyAndHold, SMACross
    from intraday.config import load_settings
    from intraday.features import FeaturePipeline
    from intraday.report import backtest_report

    settings = load_settings(environ={})
    pipe = FeaturePipeline.from_settings(settings.features)
    bars = month.iloc[: 3 * 1440]
    bt = Backtester(pipe, env=settings.env)
    pos = settings.env.positions
    results = {"sma": bt.run(bars, SMACross(pos)), "hold": bt.run(bars, BuyAndHold(pos))}
    path = backtest_report(results, bars, tmp_path / "bt.html", "test report")
    html = path.read_text()
    assert html.count("Plotly.newPlot") == 6 and "<h2>metrics</h2>" in html and "Sharpe" in html
    assert "drawdown" in html and "rolling Sharpe" in html and "costs paid by kind" in html
