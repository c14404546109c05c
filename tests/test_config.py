import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from conftest import ROOT

from intraday.config import (
    SECTIONS,
    DataSettings,
    ObsSettings,
    Settings,
    SettingsError,
    find_settings_file,
    load_secrets,
    load_settings,
    seconds_timeframe,
    timeframe_seconds,
)


def test_shipped_settings_ini_equals_model_defaults():
    s = load_settings(ROOT / "settings.ini", environ={})
    assert s.data == DataSettings() and s.obs == ObsSettings()
    assert s.source("data.timeframe") == str(ROOT / "settings.ini")


@pytest.mark.parametrize("tf,sec", [("1s", 1), ("1m", 60), ("15m", 900), ("4h", 14400), ("1d", 86400), ("1w", 604800)])
def test_timeframes_round_trip(tf, sec):
    assert timeframe_seconds(tf) == sec and seconds_timeframe(sec) == tf


@pytest.mark.parametrize("bad", ["7x", "m", "0m", "1.5m", "", None, "1M "])
def test_bad_timeframe_names_value(bad):
    with pytest.raises(ValueError, match="timeframe"):
        timeframe_seconds(bad)


def test_layers_override_in_order(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[data]\ntimeframe = 5m\ndays = 3\n[obs]\nlog_level = debug\n")
    s = load_settings(ini, environ={"INTRADAY__DATA__DAYS": "9", "INTRADAY__DATA__SEED": "1"}, data__seed=2)
    assert (s.data.timeframe, s.data.days, s.data.seed, s.obs.log_level) == ("5m", 9, 2, "DEBUG")
    assert s.source("data.timeframe") == str(ini)
    assert s.source("data.days") == "env INTRADAY__DATA__DAYS"
    assert s.source("data.seed") == "argument"
    assert s.source("data.alpha") == "default"
    assert isinstance(s.data.start, date) and isinstance(s.data.store, Path)
    keys = [k for k, _, _ in s.rows()]
    assert keys[0] == "data.exchange" and "obs.metrics_port" in keys


def test_section_dict_overrides():
    s = load_settings(environ={}, data={"alpha": 0.0, "symbol": "BTC/USDT"})
    assert s.data.alpha == 0.0 and s.data.symbol == "BTC/USDT"


def test_every_problem_reported_once_with_key_value_source_and_rule(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[data]\ntimefrme = 1m\nalpha = 1.5\n[featurez]\nx = 1\n")
    env = {"INTRADAY__DATA__TIMEFRAME": "7x", "INTRADAY__OBS__LOG_LEVEL": "loud", "INTRADAY__BAD": "1"}
    with pytest.raises(SettingsError) as ei:
        load_settings(ini, environ=env, obs__metrics_port=70000, data=5)
    probs = ei.value.problems
    text = "\n".join(probs)
    assert len(probs) == 8, text
    assert "data.timeframe = '7x' (from env INTRADAY__DATA__TIMEFRAME): timeframe '7x' is not <count><unit>" in text
    assert f"data.timefrme (from {ini}): unknown key; allowed keys: exchange," in text
    assert "data.alpha = '1.5'" in text and "less than 1" in text
    assert "[featurez]" in text and "unknown section" in text
    assert "obs.log_level = 'loud'" in text and "'INFO'" in text
    assert "obs.metrics_port = 70000 (from argument)" in text
    assert "INTRADAY__BAD: environment overrides are named INTRADAY__<SECTION>__<KEY>" in text
    assert "data: pass section={key: value}" in text
    assert str(ei.value).startswith("invalid settings (8 problem(s))")


def test_bad_settings_files(tmp_path):
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path / "missing.ini", environ={})
    broken = tmp_path / "broken.ini"
    broken.write_text("no section header\n")
    with pytest.raises(SettingsError, match="not a valid settings file"):
        load_settings(broken, environ={})


def test_find_settings_file(tmp_path):
    (tmp_path / "settings.ini").write_text("[data]\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_settings_file(deep, environ={}) == tmp_path / "settings.ini"
    assert find_settings_file(deep, environ={"INTRADAY_SETTINGS": "/x/y.ini"}) == Path("/x/y.ini")
    empty = Path("/")
    assert find_settings_file(empty, environ={}) in (None, Path("/settings.ini"))


def test_validators_of_sections():
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        DataSettings(symbol="btc-usdt")
    with pytest.raises(ValueError, match="exchange id"):
        DataSettings(exchange="Bin ance")
    assert ObsSettings(log_file="/tmp/x.log").log_file == Path("/tmp/x.log")


def test_secrets_from_env_and_file_never_shown(tmp_path):
    f = tmp_path / "secrets"
    f.write_text("# creds\nINTRADAY_API_KEY='key-in-file'\napi_secret = \"sec-in-file\"\n\n")
    f.chmod(0o600)
    env = {"INTRADAY_SECRETS_FILE": str(f), "INTRADAY_API_KEY": "key-in-env"}
    s = load_settings(environ=env)
    assert s.secrets.api_key.get_secret_value() == "key-in-env"
    assert s.secrets.api_secret.get_secret_value() == "sec-in-file"
    assert sorted(s.secrets.values()) == ["key-in-env", "sec-in-file"]
    shown = repr(s) + str(s) + s.model_dump_json() + str(s.model_dump()) + repr(s.secrets) + str(s.rows())
    assert "key-in-env" not in shown and "sec-in-file" not in shown
    assert load_secrets({}).values() == []


def test_secrets_file_errors_name_line_not_value(tmp_path):
    f = tmp_path / "secrets"
    f.write_text("api_key = fine\npassword = hunter2\n")
    f.chmod(0o600)
    with pytest.raises(SettingsError) as ei:
        load_settings(environ={"INTRADAY_SECRETS_FILE": str(f)})
    assert f"{f}:2:" in str(ei.value) and "hunter2" not in str(ei.value)
    with pytest.raises(SettingsError, match="cannot read the secrets file"):
        load_secrets({"INTRADAY_SECRETS_FILE": str(tmp_path / "nope")})


def test_settings_model_rejects_unknown_section():
    with pytest.raises(ValueError):
        Settings(featurez={})


def test_cli_names_bad_env_key_and_exits_nonzero():
    "Acceptance: INTRADAY__DATA__TIMEFRAME=7x intraday config show exits non-zero and names data.timeframe."
    exe = Path(sys.executable).with_name("intraday")
    env = {**os.environ, "INTRADAY__DATA__TIMEFRAME": "7x"}
    r = subprocess.run([str(exe), "config", "show"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0
    assert "data.timeframe" in r.stderr and "7x" in r.stderr
    assert "Traceback" not in r.stderr


def _float_keys() -> list[tuple[str, str, str]]:
    "(section, key, a non-finite raw value) for every float setting, lists included."
    out = []
    for sec, model in SECTIONS.items():
        for key, f in model.model_fields.items():
            ann = str(f.annotation)
            if "float" in ann:
                out.append((sec, key, "0.5, inf" if "list" in ann else "inf"))
    return out


def test_config_refuses_infinite_taker_bps():
    with pytest.raises(SettingsError) as ei:
        load_settings(environ={"INTRADAY__FILLS__TAKER_BPS": "inf"})
    assert ei.value.problems == [
        "fills.taker_bps = 'inf' (from env INTRADAY__FILLS__TAKER_BPS): Input should be a finite number"
    ]
    with pytest.raises(SettingsError, match=r"fills.taker_bps = inf \(from argument\): Input should be a finite"):
        load_settings(environ={}, fills__taker_bps=float("inf"))


@pytest.mark.parametrize(("sec", "key", "value"), _float_keys(), ids=lambda x: str(x))
def test_config_refuses_non_finite_floats_in_every_section(sec, key, value):
    var = f"INTRADAY__{sec.upper()}__{key.upper()}"
    for how in ({"environ": {var: value}}, {"environ": {}, f"{sec}__{key}": value.replace("inf", "nan")}):
        with pytest.raises(SettingsError) as ei:
            load_settings(**how)
        (line,) = ei.value.problems  # one line, naming the key, its source and what is allowed
        assert line.startswith(f"{sec}.{key} = ") and "finite number" in line
        assert ("from env " + var if "environ" in how and how["environ"] else "from argument") in line


def test_config_float_settings_cover_the_issue_list():
    keys = {f"{s}.{k}" for s, k, _ in _float_keys()}
    want = {"fills.taker_bps", "fills.kyle_lambda", "env.initial_cash", "risk.price_band_bps", "live.order_rate",
            "live.unknown_grace_s", "live.reconcile_every_s", "features.clip"}  # fmt: skip
    assert want <= keys
    with pytest.raises(SettingsError, match=r"fills.kyle_lambda = 'nan' .*finite number or Input should be 'auto'"):
        load_settings(environ={"INTRADAY__FILLS__KYLE_LAMBDA": "nan"})


def test_config_unknown_key_error_never_echoes_value(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[live]\napi_secret = TOPSECRET123\n")
    env = {"INTRADAY__LIVE__API_KEY": "TOPSECRET456"}
    with pytest.raises(SettingsError) as ei:
        load_settings(ini, environ=env, live={"secret": "TOPSECRET789"})
    text = str(ei.value)
    assert "TOPSECRET" not in text, text
    assert f"live.api_secret (from {ini}): unknown key" in text
    assert "live.api_key (from env INTRADAY__LIVE__API_KEY): unknown key" in text
    assert "live.secret (from argument): unknown key" in text


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_config_refuses_secrets_file_readable_by_others(tmp_path, mode):
    f = tmp_path / "secrets"
    f.write_text("api_key = paper-key-1\napi_secret = paper-secret-1\n")
    f.chmod(mode)
    with pytest.raises(SettingsError) as ei:
        load_settings(environ={"INTRADAY_SECRETS_FILE": str(f)})
    (line,) = ei.value.problems
    assert f"mode {mode:04o}" in line and f"chmod 600 {f}" in line and "paper-secret-1" not in line
    f.chmod(0o600)
    assert load_settings(environ={"INTRADAY_SECRETS_FILE": str(f)}).secrets.values() == [
        "paper-key-1",
        "paper-secret-1",
    ]


def test_config_refuses_secrets_too_short_to_redact(tmp_path):
    with pytest.raises(SettingsError) as ei:
        load_settings(environ={"INTRADAY_API_KEY": "k", "INTRADAY_API_SECRET": "s"})
    assert len(ei.value.problems) == 2 and all("at least 8 characters" in p for p in ei.value.problems)
    assert "secrets.api_key (from INTRADAY_API_KEY)" in str(ei.value)
    f = tmp_path / "secrets"
    f.write_text("api_secret = short\n")
    f.chmod(0o600)
    with pytest.raises(SettingsError, match=r"secrets.api_secret \(from the file INTRADAY_SECRETS_FILE names\)"):
        load_settings(environ={"INTRADAY_SECRETS_FILE": str(f)})
    assert load_settings(environ={"INTRADAY_API_KEY": "12345678"}).secrets.values() == ["12345678"]
