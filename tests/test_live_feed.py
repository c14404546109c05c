"""BarFeed against the paper venue through the real ccxt.pro client: closed by time and confirmed over REST, gaps
backfilled in order, and a gap REST cannot fill raised as FeedGap."""

import asyncio

import pytest

from intraday.binance import connect, serve
from intraday.data import synth_market
from intraday.live import BarFeed, FeedGap
from intraday.venue import Venue

STEP = 60_000


@pytest.fixture
def venue():
    v = Venue(synth_market(days=1, seed=4), start=300, admin=True, keys={"k": "s"})
    url, stop = serve(v)
    yield v, url
    stop()


def run(url, body):
    async def main():
        ex = connect(url, "k", "s", pro=True)
        try:
            return await body(ex)
        finally:
            await ex.close()

    return asyncio.run(main())


def test_a_forming_bar_closes_by_time_confirmed_over_rest(venue):
    v, url = venue

    async def body(ex):
        feed = BarFeed(ex, "SYN/USDT", "1m", grace_s=0.0, stale_s=5.0)  # Binance-like: streamed bars may be forming
        hist = await feed.history(50)
        feed.subscribe()
        await asyncio.sleep(0.1)
        v.step()
        bar = await asyncio.wait_for(feed.next(), 10)
        return hist, bar

    hist, bar = run(url, body)
    assert len(hist) == 50 and [b.ts for b in hist] == [hist[0].ts + k * STEP for k in range(50)]
    assert bar.ts == hist[-1].ts + STEP and bar.source == "rest"  # its end has passed: REST confirmed it
    assert bar.close == pytest.approx(float(v.ledger()["last"]))


def test_missing_bars_are_backfilled_in_order(venue):
    v, url = venue

    async def body(ex):
        feed = BarFeed(ex, "SYN/USDT", "1m", closed_only=True)
        hist = await feed.history(10)
        feed.tracker.last = hist[-4].ts  # as if the last three bars had been missed during a reconnect
        feed.subscribe()
        await asyncio.sleep(0.1)
        v.step()
        return hist, [await asyncio.wait_for(feed.next(), 10) for _ in range(4)], feed

    hist, got, feed = run(url, body)
    assert [b.ts for b in got] == [h.ts for h in hist[-3:]] + [hist[-1].ts + STEP]
    assert [b.source for b in got] == ["backfill"] * 3 + ["stream"] and feed.backfilled == 3


def test_a_gap_rest_cannot_fill_raises(venue):
    v, url = venue

    async def body(ex):
        feed = BarFeed(ex, "SYN/USDT", "1m", closed_only=True)
        await feed.history(5)
        feed.tracker.last = int(v.ts[0]) - 10 * STEP  # before the first bar the venue has
        feed.subscribe()
        await asyncio.sleep(0.1)
        v.step()
        with pytest.raises(FeedGap, match="missing after a reconnect"):
            await asyncio.wait_for(feed.next(), 10)

    run(url, body)
