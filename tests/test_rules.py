"""The live risk engine end to end on the paper venue (real ccxt client on 127.0.0.1): every rule action, hot reload
applied and refused (both journaled), the metrics in /metrics and /state."""

import asyncio
import math

import numpy as np
import pytest
from test_unattended import bars, close, fixed_bundle, runner_for, venue_for

from intraday.binance import serve
from intraday.obs import metrics_text
from intraday.risk import TradingState
from intraday.rules import RiskAgent, RiskEngine, RulesError, load_rules


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    "A spot bundle that always wants the whole equity in the base asset."
    return fixed_bundle(tmp_path_factory.mktemp("rules") / "full", "0,1", 1)


def rule(name, metric, op, threshold, action, **kw) -> str:
    extra = "".join(f", {k}: {v}" for k, v in kw.items())
    return f'  - {{name: {name}, metric: {metric}, op: "{op}", threshold: {threshold}, action: {action}{extra}}}\n'


def notes(r, what: str) -> list[dict]:
    return [e["data"] for e in r.router.journal.events() if e["kind"] == "note" and e["data"].get("what") == what]


def weight(r) -> float:
    return r.pnl.qty * r.last_bar.close / r.pnl.equity


def test_every_rule_action_and_hot_reload_on_the_paper_venue(full, tmp_path):
    venue = venue_for(full)
    url, stop = serve(venue)
    path = tmp_path / "risk.yaml"
    path.write_text("rules:\n" + rule("cap", "drawdown", ">=", 0, "reduce", weight=0.3))
    told = []

    async def session():
        r = await runner_for(url, tmp_path / "state", full)
        agent = RiskAgent(RiskEngine(window=50), path, notify=lambda *m: told.append(m)).attach(r)
        out = {"reduce": await bars(r, venue, 4)}
        out["reduce_w"] = weight(r)
        path.write_text("rules:\n" + rule("out", "drawdown", ">=", 0, "flatten"))
        out["flatten"] = await bars(r, venue, 3)
        out["flatten_w"] = weight(r)
        path.write_text("rules:\n" + rule("bad", "drawdon", ">", 0, "halt") + rule("bad", "drawdown", ">", 0, "stop"))
        out["refused"] = await bars(r, venue, 3)
        out["refused_w"] = weight(r)
        path.write_text("rules:\n" + rule("no_adding", "drawdown", ">=", 0, "block"))
        out["block"] = await bars(r, venue, 3)
        out["block_state"], out["block_w"] = r.router.risk.state, weight(r)
        path.write_text("rules:\n" + rule("calm", "realized_vol", ">", "1.0e-9", "vol_target"))
        out["vol"] = await bars(r, venue, 3)
        out["vol_state"] = r.router.risk.state
        path.write_text(
            "rules:\n" + rule("too_much", "exposure", ">", 0.5, "halt") + rule("note", "turnover", ">=", 0, "warn")
        )
        out["halt"] = await bars(r, venue, 5)
        out["state"], out["metrics"] = r.state(), metrics_text(r.monitor.registry)
        await close(r)
        return r, agent, out

    r, agent, out = asyncio.run(session())
    stop()
    assert all(d["target_weight"] == 0.3 for d in out["reduce"]) and out["reduce_w"] == pytest.approx(0.3, abs=0.01)
    assert all(d["target_weight"] == 0 for d in out["flatten"]) and abs(out["flatten_w"]) < 1e-3
    assert all(d["target_weight"] == 0 for d in out["refused"]) and abs(out["refused_w"]) < 1e-3  # old rules kept
    assert out["block_state"] == TradingState.REDUCING and abs(out["block_w"]) < 1e-3  # no new exposure
    assert out["vol_state"] == TradingState.ACTIVE  # the block ended with its rule
    assert all(0 < d["target_weight"] < 1e-3 for d in out["vol"])  # scaled to a volatility budget of 1e-9 a bar
    assert r.router.risk.state == TradingState.HALTED and r.router.risk.reason.startswith(
        "risk rule too_much: exposure"
    )
    sent_after = [d for d in out["halt"] if d["client_id"]]
    assert len(sent_after) == 1  # the order that took exposure past 0.5, then nothing: halted
    changed, refused = notes(r, "risk rules changed"), notes(r, "risk rules refused")
    assert len(changed) == 4 and len(refused) == 1 and agent.reloads == {"applied": 4, "refused": 1}
    assert changed[0]["old"][0]["name"] == "cap" and changed[0]["new"][0]["name"] == "out"
    assert f"file {path}" in changed[0]["by"] and len(changed[0]["sha256"]) == 64
    assert len(refused[0]["errors"]) == 2 and refused[0]["kept"][0]["name"] == "out"
    assert "rule 'bad' (#1): unknown metric 'drawdon'" in refused[0]["errors"][0]
    fired = [n["rule"]["name"] for n in notes(r, "risk rule fired")]
    assert fired == ["cap", "out", "no_adding", "calm", "note", "too_much"]  # warn: at once (turnover >= 0)
    assert [k for k, *_ in told].count("rule:too_much") == 1 and any(k.startswith("rules-refused") for k, *_ in told)
    eng = out["state"]["risk_engine"]
    assert eng["reloads"] == {"applied": 4, "refused": 1} and eng["rules"][0]["active"] is True
    assert eng["metrics"]["exposure"] > 0.5 and math.isfinite(eng["metrics"]["realized_vol"])
    assert (
        "intraday_risk_drawdown " in out["metrics"]
        and 'intraday_risk_rule_active{rule="too_much"} 1.0' in out["metrics"]
    )
    assert "intraday_risk_feed_staleness_seconds" in out["metrics"]


def test_a_bad_rule_file_at_start_is_an_error_naming_each_rule(tmp_path):
    path = tmp_path / "risk.yaml"
    path.write_text("rules:\n  - {name: a, metric: drawdown, op: '>', threshold: .nan, action: halt, window: 0}\n")
    with pytest.raises(RulesError) as ei:
        RiskAgent(RiskEngine(), path)
    assert len(ei.value.problems) == 2 and all(f"{path}: rule 'a' (#1)" in p for p in ei.value.problems)
    path.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(path)
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


@pytest.fixture
def receiver():
    "A webhook on 127.0.0.1 that keeps every JSON body posted to it (apprise's json:// target)."
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{srv.server_address[1]}/alerts", got
    srv.shutdown()
    srv.server_close()


def test_a_halt_reaches_the_receiver_once_not_once_per_bar(full, tmp_path, receiver):
    from intraday.alerts import Alerter, watch

    url, got = receiver
    venue = venue_for(full)
    vurl, stop = serve(venue)
    path = tmp_path / "risk.yaml"
    path.write_text("rules:\n" + rule("too_much", "exposure", ">", 0.5, "halt"))
    alerter = Alerter([url], repeat_s=3600, per_minute=10)

    async def session():
        r = await runner_for(vurl, tmp_path / "state", full)
        watch(alerter, r)
        RiskAgent(RiskEngine(window=50), path, notify=alerter.send).attach(r)
        ds = await bars(r, venue, 30)
        why = r.router.risk.reason
        for _ in range(3):  # resumed, and halted again by the same cause: the same halt, no new message
            r.router.set_state(TradingState.ACTIVE, "resumed by the test")
            r.router.set_state(TradingState.HALTED, why)
        await close(r)
        return r, ds

    r, ds = asyncio.run(session())
    stop()
    assert alerter.flush(10)
    assert (
        r.router.risk.state == TradingState.HALTED and len([d for d in ds if d["client_id"]]) == 1
    )  # then 29 halted bars
    halts = [m for m in got if "trading halted" in m["title"]]
    rules = [m for m in got if "risk rule too_much fired" in m["title"]]
    assert len(halts) == 1 and len(rules) == 1 and len(got) == 2, got
    assert "risk rule too_much: exposure" in halts[0]["message"] and "SYN/USDT" in halts[0]["title"]
    assert alerter.counts == {"sent": 2, "duplicate": 3, "rate_limited": 0, "failed": 0}


def test_a_backtest_and_a_paper_session_halt_on_the_same_bar_for_the_same_rule(full, tmp_path):
    from test_live import SPEC
    from test_unattended import BARS, KEY, SECRET

    from intraday.backtest import Backtester, bundle_policy
    from intraday.bundle import PolicyBundle
    from intraday.metrics import drawdown
    from intraday.rules import parse_rules
    from intraday.venue import Venue

    b = PolicyBundle.load(full)
    pipe, n = b.pipeline(), 120
    start = pipe.warmup + 50
    bt = Backtester(pipe, b.fill_model(), b.env_settings())
    window = dict(start=pipe.warmup + 1, end=pipe.warmup + 1 + n)
    free = bt.run(BARS.iloc[start - pipe.warmup :], bundle_policy(b), **window)
    limit = round(0.6 * float(drawdown(free.equity)["drawdown"].max()), 6)  # reached part-way through the window
    assert limit > 0
    text = "rules:\n" + rule("dd", "drawdown", ">=", limit, "halt")
    (tmp_path / "risk.yaml").write_text(text)
    engine = RiskEngine(parse_rules(__import__("yaml").safe_load(text)), window=50)
    res = bt.run(BARS.iloc[start - pipe.warmup :], bundle_policy(b), rules=engine, **window)
    assert res.engine == "python" and [k for _, k in res.halts] == ["rule:dd"]

    venue = Venue(BARS, start=start, admin=True, keys={KEY: SECRET}, fill_model=b.fill_model(), spec=SPEC,
                  balances={"USDT": b.env_settings().initial_cash, "SYN": 0.0})  # fmt: skip
    url, stop = serve(venue)

    async def session():
        r = await runner_for(url, tmp_path / "state", full)
        RiskAgent(RiskEngine(window=50), tmp_path / "risk.yaml").attach(r)
        await bars(r, venue, n)
        await close(r)
        return r

    r = asyncio.run(session())
    stop()
    fired = notes(r, "risk rule fired")
    # live holds its position when halted (a backtest goes flat), so the drawdown moves on and the rule may fire again
    assert fired and r.router.risk.state == TradingState.HALTED and r.router.risk.reason.startswith("risk rule dd:")
    live_bar = fired[0]["bar"]
    assert live_bar == res.halts[0][0].timestamp()  # the same bar (its open time, unix s)
    print(f"halted on {res.halts[0][0]} in the backtest and in the paper session (drawdown >= {limit:.4%})")


def test_a_stress_rule_blocks_an_order_and_the_cli_prints_the_table(full, tmp_path, capsys):
    from intraday.cli import main

    venue = venue_for(full)
    url, stop = serve(venue)
    path, state = tmp_path / "risk.yaml", tmp_path / "state"
    path.write_text("rules:\n" + rule("worst", "stress_loss", ">", 0.04, "block"))  # a 5 % gap alone loses more

    async def session():
        r = await runner_for(url, state, full)
        agent = RiskAgent(RiskEngine(window=50), path).attach(r)
        blocked = await bars(r, venue, 3)
        path.write_text("rules:\n" + rule("worst", "stress_loss", ">", 0.5, "block"))  # a looser limit
        passed = await bars(r, venue, 2)
        await close(r)
        return r, agent, blocked, passed

    r, agent, blocked, passed = asyncio.run(session())
    stop()
    assert all(d["target_weight"] == 0 and d["client_id"] is None for d in blocked)  # the policy wanted 1
    assert agent.engine.stress_blocked == 3 and r.router.risk.state == TradingState.ACTIVE
    assert passed[0]["target_weight"] == 1 and passed[0]["client_id"] is not None
    assert 0.05 < agent.engine.values["stress_loss"] < 0.5  # the position now held: its worst scenario
    assert main(["risk", "stress", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "gap -10%" in out and "outage 30 bars" in out and "of equity" in out
    table = {line.split("  ")[0].strip(): line.split()[-1] for line in out.splitlines()[2:]}
    assert float(table["gap -10%"].rstrip("%")) > 9.0  # the whole equity long: a 10 % gap loses over 9 %
    assert main(["risk", "stress", "--state-dir", str(tmp_path / "none")]) == 1
    assert "no risk engine snapshot" in capsys.readouterr().err


def test_alerter_dedupes_rate_limits_and_counts_a_dead_channel():
    from intraday.alerts import Alerter

    with pytest.raises(ValueError, match="scheme 'nosuch'") as ei:
        Alerter(["nosuch://tok3n-value@host"])
    assert "tok3n" not in str(ei.value)  # a URL may hold a token: never echoed
    t = [0.0]
    a = Alerter(["json://127.0.0.1:9/none"], repeat_s=60, per_minute=2, clock=lambda: t[0])  # nothing listens on 9
    assert [a.send("k", "title", "body") for _ in range(3)] == [True, False, False]
    t[0] = 61.0
    assert [a.send(k, "t", "b") for k in ("k", "j", "i")] == [True, True, False]
    assert a.flush(30)
    assert a.counts == {"sent": 0, "duplicate": 2, "rate_limited": 1, "failed": 3}


def test_warm_up_closes_are_the_var_prior_until_live_bars_exist():
    from intraday.rules import Bus, Calculators

    calc = Calculators(Bus(), window=50, alpha=0.95)
    closes = list(100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 80))))
    assert calc.seed(closes) == 50 and calc.rets.count == 50  # the last 50 of 79 returns
    assert calc.seed(closes) == 0  # once only: live (or seeded) returns are never replaced


def test_the_rule_files_scenarios_price_the_stress_block_and_the_table(full, tmp_path, capsys):
    "Scenarios declared in the rule file replace the defaults: they block an order, and a reload changes them."
    from intraday.cli import main

    venue = venue_for(full)
    url, stop = serve(venue)
    path, state = tmp_path / "risk.yaml", tmp_path / "state"
    worst = rule("worst", "stress_loss", ">", 0.2, "block")
    path.write_text("rules:\n" + worst + "scenarios:\n  - {name: crash -30%, kind: gap, size: 0.3}\n")

    async def session():
        r = await runner_for(url, state, full)
        agent = RiskAgent(RiskEngine(window=50), path).attach(r)
        blocked = await bars(r, venue, 2)  # the whole equity long would lose 30 % in the file's crash: over 0.2
        path.write_text("rules:\n" + worst + "scenarios:\n  - {name: dip -10%, kind: gap, size: 0.1}\n")
        passed = await bars(r, venue, 2)
        await close(r)
        return r, agent, blocked, passed

    r, agent, blocked, passed = asyncio.run(session())
    stop()
    assert all(d["target_weight"] == 0 and d["client_id"] is None for d in blocked)
    assert passed[0]["target_weight"] == 1 and passed[0]["client_id"] is not None  # the milder scenario allows it
    changed = notes(r, "risk rules changed")
    assert [s["name"] for s in changed[0]["old_scenarios"]] == ["crash -30%"]
    assert [s["name"] for s in changed[0]["scenarios"]] == ["dip -10%"]
    assert main(["risk", "stress", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "dip -10%" in out and "crash -30%" not in out and "gap -5%" not in out  # the file's, not the defaults


def test_the_runner_chains_its_lifecycle_into_the_audit_trail_and_sends_the_days_statement(full, tmp_path, receiver):
    "Start (settings changed since the last start), rule changes, kill, resume and the day's close: one hash chain;"
    " the day's statement matches the venue's ledger and reaches a person once."
    import time

    from intraday.alerts import Alerter, watch
    from intraday.trail import Trail, verify

    url, got = receiver
    venue = venue_for(full)
    vurl, stop = serve(venue)
    path, trail = tmp_path / "risk.yaml", Trail(tmp_path / "audit" / "trail.jsonl")
    alerter = Alerter([url], repeat_s=3600, per_minute=10)

    async def session(max_weight: float):
        r = await runner_for(vurl, tmp_path / "state", full)
        r.trail = trail
        r.record_start({"risk.max_weight": max_weight, "live.timeframe": "1m"})
        watch(alerter, r)
        path.write_text("rules:\n" + rule("cap", "exposure", ">", 0.9, "warn"))
        RiskAgent(RiskEngine(window=50), path).attach(r)
        await bars(r, venue, 3)
        path.write_text("rules:\n" + rule("cap", "exposure", ">", 0.5, "warn"))
        await bars(r, venue, 1)
        r.kill("the test's kill")
        await r.router.kill_task
        await r.resume("the test's resume")
        st = r.roll_day(time.time() + 86_400)  # the first bar of tomorrow would do this
        again = r.roll_day(time.time() + 86_400 + 60)  # the same new day: nothing more
        await close(r)
        return r, st, again

    asyncio.run(session(1.0))[0]  # a first session: its start is the baseline
    r, st, again = asyncio.run(session(0.5))
    ledger = venue.ledger()
    stop()
    assert alerter.flush(10)
    kinds = [rec["kind"] for rec in trail.records()]
    one = ["risk rules loaded", "risk rules changed", "kill", "resume", "eod"]
    assert kinds == ["live start", *one, "live start", *one], kinds
    assert verify(trail.path) == (len(kinds), None)
    starts = [rec["data"] for rec in trail.records() if rec["kind"] == "live start"]
    assert starts[0]["changed"] == {} and starts[1]["changed"] == {"risk.max_weight": [1.0, 0.5]}
    change = [rec["data"] for rec in trail.records() if rec["kind"] == "risk rules changed"][-1]
    assert change["old"][0]["threshold"] == 0.9 and change["new"][0]["threshold"] == 0.5 and "owner" in change["by"]
    assert [rec["data"]["reason"] for rec in trail.records() if rec["kind"] == "kill"][-1] == "the test's kill"
    eod = trail.records()[-1]["data"]
    assert again is None and eod["day"] == st["day"] and eod["runner"] == "ua"
    assert st["position_close"] == pytest.approx(ledger["balances"]["SYN"]["total"]) == eod["position"]
    assert st["fills"] == len(ledger["trades"]) > 0
    statements = [m for m in got if m["title"].startswith("intraday: statement ")]
    # both sessions closed the same day of the same runner: its statement is sent once
    assert len(statements) == 1 and st["day"] in statements[0]["title"] and "SYN/USDT" in statements[0]["title"]
    assert statements[0]["message"].startswith(f"eod {st['day']} (paper/ua): position ")
    assert st["files"]["statement"] in statements[0]["message"]
