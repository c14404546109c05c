import json
import logging
import multiprocessing as mp
import subprocess
import sys
import threading
import urllib.request

import pytest
from conftest import ROOT
from loguru import logger

from intraday.config import load_settings
from intraday.obs import (
    LATENCY_BUCKETS,
    Redactor,
    latency_histogram,
    make_registry,
    metrics_text,
    serve_metrics,
    setup_logging,
    timed,
)


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    logger.remove()
    logging.basicConfig(handlers=[], force=True)


def read_json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_with_secrets_redacted_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("INTRADAY_API_KEY", "AKIA-very-secret")
    monkeypatch.setenv("INTRADAY_API_SECRET", 'quote"and\\slash')
    settings = load_settings()
    log = tmp_path / "log.jsonl"
    setup_logging("DEBUG", sink=log, settings=settings, secrets=["extra-token"])
    logger.bind(key="AKIA-very-secret").info("signing with {} and extra-token", 'quote"and\\slash')
    try:
        raise RuntimeError("auth failed for AKIA-very-secret")
    except RuntimeError:
        logger.exception("order failed")
    logger.complete()
    logger.remove()
    raw = log.read_text()
    assert "AKIA-very-secret" not in raw and "extra-token" not in raw and "and\\\\slash" not in raw
    lines = read_json_lines(log)
    assert len(lines) == 2
    assert lines[0]["record"]["message"] == "signing with *** and ***"
    assert lines[0]["record"]["extra"]["key"] == "***"
    assert lines[1]["record"]["level"]["name"] == "ERROR"
    assert "auth failed for ***" in lines[1]["text"]


def test_level_filters_and_defaults_from_settings(tmp_path):
    log = tmp_path / "x.log"
    settings = load_settings(environ={}, obs={"log_level": "warning", "log_file": str(log)})
    setup_logging(settings=settings)
    logger.info("hidden")
    logger.warning("shown")
    logger.complete()
    logger.remove()
    assert [x["record"]["message"] for x in read_json_lines(log)] == ["shown"]


def test_stdlib_logging_is_routed_into_json(tmp_path):
    log = tmp_path / "x.log"
    setup_logging("INFO", sink=log, secrets=["s3cret-value"], enqueue=False)
    logging.getLogger("ccxt.base.exchange").info("GET /api?signature=s3cret-value")
    logging.getLogger("ccxt").debug("below ccxt's INFO floor")
    lines = read_json_lines(log)
    assert [x["record"]["message"] for x in lines] == ["GET /api?signature=***"]


def test_threads_write_whole_lines(tmp_path):
    log = tmp_path / "threads.log"
    setup_logging("INFO", sink=log)

    def work(i):
        for j in range(200):
            logger.info("thread {} message {} " + "x" * 300, i, j)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.complete()
    logger.remove()
    lines = read_json_lines(log)
    assert len(lines) == 8 * 200
    assert len({x["record"]["message"] for x in lines}) == 8 * 200


def _child(i):
    for j in range(100):
        logger.info("process {} message {}", i, j)
    logger.complete()


def test_forked_processes_write_whole_lines(tmp_path):
    log = tmp_path / "procs.log"
    setup_logging("INFO", sink=log)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_child, args=(i,)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    logger.complete()
    logger.remove()
    lines = read_json_lines(log)
    assert len(lines) == 400
    assert {x["record"]["process"]["id"] for x in lines} == {p.pid for p in procs}


def test_library_adds_no_sinks_and_stays_silent(tmp_path):
    "Importing and calling the library logs nothing; the same call after setup_logging does (positive control)."
    code = (
        "import argparse, sys\n"
        "from loguru import logger\n"
        "n = len(logger._core.handlers)\n"
        "import intraday.config, intraday.obs, intraday.data, intraday.report, intraday.cli\n"
        "assert len(logger._core.handlers) == n, 'importing intraday added a sink'\n"
        "if sys.argv[1] == 'setup': intraday.obs.setup_logging('INFO', enqueue=False)\n"
        "s = intraday.config.load_settings(environ={}, data={'days': 1})\n"
        "intraday.cli.cmd_data_synth(argparse.Namespace(out=sys.argv[2]), s)\n"
    )
    out = str(tmp_path / "b.parquet")
    quiet = subprocess.run([sys.executable, "-c", code, "plain", out], capture_output=True, text=True, cwd=ROOT)
    loud = subprocess.run([sys.executable, "-c", code, "setup", out], capture_output=True, text=True, cwd=ROOT)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "wrote 1,440" in quiet.stdout
    assert "wrote synthetic bars" not in quiet.stderr
    assert json.loads(loud.stderr.splitlines()[-1])["record"]["message"] == "wrote synthetic bars"


def test_redactor_longest_first():
    r = Redactor(["abc", "abcdef"])
    assert r("xx abcdef yy abc") == "xx *** yy ***"
    r.add("")
    assert r("nothing") == "nothing"


def test_latency_histogram_and_timed_also_on_error():
    reg = make_registry()
    h = latency_histogram("intraday_test_seconds", "test", reg, labelnames=("op",))
    with timed(h, op="ok"):
        pass
    with pytest.raises(ZeroDivisionError), timed(h, op="boom"):
        raise ZeroDivisionError("inside the timed block")
    plain = latency_histogram("intraday_plain_seconds", "plain", reg)
    with timed(plain):
        sum(range(100))
    txt = metrics_text(reg)
    assert 'intraday_test_seconds_count{op="ok"} 1.0' in txt
    assert 'intraday_test_seconds_count{op="boom"} 1.0' in txt
    assert "intraday_plain_seconds_count 1.0" in txt
    assert min(LATENCY_BUCKETS) < 1e-4 and sum(b < 1e-3 for b in LATENCY_BUCKETS) >= 5
    assert 'le="1e-05"' in txt


def test_serve_metrics_over_http():
    reg = make_registry()
    h = latency_histogram("intraday_http_seconds", "served", reg)
    h.observe(0.0002)
    server, thread = serve_metrics(0, reg)
    try:
        port = server.server_port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert "intraday_http_seconds_bucket" in body and "intraday_http_seconds_count 1.0" in body


def test_obs_redaction_by_exact_value_keeps_letters_and_json_keys(tmp_path, monkeypatch):
    "Issue 20: with key k and secret s every letter k and s became ***, JSON keys included (`me******age`)."
    monkeypatch.setenv("INTRADAY_API_KEY", "paper-key-1")
    monkeypatch.setenv("INTRADAY_API_SECRET", "paper-secret-1")
    settings = load_settings()
    log = tmp_path / "log.jsonl"
    setup_logging("INFO", sink=log, settings=settings, secrets=["function"])  # "function" is also a record key
    logger.bind(secret="paper-secret-1", other="paper-key-12").info("sessions keep paper-key-1 for the function")
    logger.complete()
    logger.remove()
    raw = log.read_text()
    (line,) = read_json_lines(log)
    rec = line["record"]
    assert rec["message"] == "sessions keep *** for the ***"
    assert rec["extra"] == {"secret": "***", "other": "paper-key-12"}  # a longer token is another value
    assert {"message", "function", "extra", "level"} <= rec.keys()  # keys are never redacted
    assert 'paper-key-1"' not in raw and "paper-secret-1" not in raw
    with monkeypatch.context() as m:
        m.setenv("INTRADAY_API_KEY", "k")
        with pytest.raises(ValueError, match="at least 8 characters"):
            load_settings()


def test_obs_redacts_backslash_secret_in_ccxt_repr_and_json(tmp_path, monkeypatch):
    "Issue 20: a key with a backslash reached the log through ccxt's repr of the request headers."
    key = "paper\\key\\1"
    monkeypatch.setenv("INTRADAY_API_KEY", key)
    monkeypatch.delenv("INTRADAY_API_SECRET", raising=False)
    log = tmp_path / "log.jsonl"
    setup_logging("DEBUG", sink=log, settings=load_settings(), enqueue=False)
    logging.getLogger("ccxt").setLevel("DEBUG")
    logging.getLogger("ccxt.base.exchange").debug("GET /api/v3/order %r", {"X-MBX-APIKEY": key})
    logger.info("body {}", json.dumps({"apiKey": key}))
    logger.info("raw {}", key)
    raw = log.read_text()
    forms = {key, json.dumps(key)[1:-1], repr(key)[1:-1], json.dumps(json.dumps(key)[1:-1])[1:-1]}
    assert not [f for f in forms if f in raw], raw
    msgs = [x["record"]["message"] for x in read_json_lines(log)]
    assert msgs == ["GET /api/v3/order {'X-MBX-APIKEY': '***'}", 'body {"apiKey": "***"}', "raw ***"]
