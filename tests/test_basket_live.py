"""The basket's decision times (issue 23, item 6, the feed): every symbol's bars from one ccxt.pro client on the paper
venue for several symbols; a symbol whose feed stalls is stated missing after the grace (the others go on), and
its bars that close later come as late bars, never decided on."""

import asyncio
import time

from intraday.basket_live import BasketFeed
from intraday.binance import connect, serve
from intraday.exchange import Exchange
from intraday.live import BarFeed
from intraday.panel import Basket

START = 300
PANEL = Basket("rotation", alpha=0.1).generate(days=1, seed=5)
SYMS = PANEL.symbols


def ms(i: int) -> int:
    return int(PANEL.index[i].value // 10**6)


async def _next(feed: BasketFeed, step, settle: float = 0.3):
    "Ask for the next slice, let the subscriptions settle, close a bar (`step`), return the slice."
    nxt = asyncio.ensure_future(feed.next())
    await asyncio.sleep(settle)
    step()
    return await asyncio.wait_for(nxt, 15)


def test_every_symbols_bar_in_one_slice_from_one_client():
    ex = Exchange(PANEL, start=START, keys={"k": "s"})
    url, stop = serve(ex)

    async def main():
        client = connect(url, "k", "s", pro=True)
        try:
            feed = BasketFeed(client, SYMS, closed_only=True)
            hist = await feed.history(10)
            slices = [await _next(feed, ex.step) for _ in range(3)]
            await feed.close()
            return hist, slices
        finally:
            await client.close()

    try:
        hist, slices = asyncio.run(main())
    finally:
        stop()
    assert all([b.ts for b in v] == [ms(i) for i in range(START - 9, START + 1)] for v in hist.values())
    assert [s.ts for s in slices] == [ms(START + k) for k in (1, 2, 3)]
    assert all(s.missing == [] and s.late == {} for s in slices)
    for k, s in enumerate(slices, 1):
        assert [b.close for b in s.bars.values()] == [round(x, 8) for x in PANEL.field("close").iloc[START + k]]


def test_a_stalled_symbol_is_missing_after_the_grace_and_its_late_bars_are_never_decided_on():
    "CCC's bars come from a second venue whose clock stops: a real stall, the other symbols' bars go on."
    live, frozen = Exchange(PANEL, start=START, keys={"k": "s"}), Exchange(PANEL, start=START, keys={"k": "s"})
    (url, stop), (url2, stop2) = serve(live), serve(frozen)

    async def main():
        a, b = connect(url, "k", "s", pro=True), connect(url2, "k", "s", pro=True)
        try:
            feeds = {s: BarFeed(a, s, closed_only=True, stale_s=60) for s in SYMS[:2]}
            feeds[SYMS[2]] = BarFeed(b, SYMS[2], closed_only=True, stale_s=60)
            feed = BasketFeed(None, SYMS, grace_s=1.0, feeds=feeds)
            await feed.history(5)
            t0 = time.time()
            stalled = [await _next(feed, live.step) for _ in range(2)]
            waited = time.time() - t0
            frozen.step(2)  # CCC's two bars close now, after their slices went out
            await asyncio.sleep(0.5)
            after = await _next(feed, lambda: (live.step(), frozen.step()))
            await feed.close()
            return stalled, waited, after, dict(feed.missed)
        finally:
            await a.close()
            await b.close()

    try:
        stalled, waited, after, missed = asyncio.run(main())
    finally:
        stop()
        stop2()
    assert [s.missing for s in stalled] == [[SYMS[2]], [SYMS[2]]]
    assert all(s.bars[SYMS[0]] is not None and s.bars[SYMS[1]] is not None for s in stalled)
    assert waited >= 2 * 1.0  # each stalled slice waited out its grace
    assert missed == {SYMS[0]: 0, SYMS[1]: 0, SYMS[2]: 2}
    assert after.ts == ms(START + 3) and after.missing == []
    assert [b.ts for b in after.late[SYMS[2]]] == [ms(START + 1), ms(START + 2)]  # features only, in order
