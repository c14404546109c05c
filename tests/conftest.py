import os
from pathlib import Path

import pytest
from loguru import logger

from intraday.data import synth_market

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def workbench_keys(tmp_path_factory):
    "The bundle signing key and trusted keys of the test session (not the user's ~/.intraday); subprocesses inherit."
    keys = tmp_path_factory.mktemp("keys")
    saved = {k: os.environ.get(k) for k in ("INTRADAY__BUNDLE__SIGNING_KEY", "INTRADAY__BUNDLE__TRUSTED_KEYS")}
    os.environ["INTRADAY__BUNDLE__SIGNING_KEY"] = str(keys / "signing.key")
    os.environ["INTRADAY__BUNDLE__TRUSTED_KEYS"] = str(keys / "trusted_keys")
    yield keys
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session", autouse=True)
def audit_trail(tmp_path_factory):
    "The audit trail of the test session (not the project's reports/); subprocesses inherit it."
    path = tmp_path_factory.mktemp("audit") / "trail.jsonl"
    saved = os.environ.get("INTRADAY__REGISTRY__AUDIT_TRAIL")
    os.environ["INTRADAY__REGISTRY__AUDIT_TRAIL"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("INTRADAY__REGISTRY__AUDIT_TRAIL", None)
    else:
        os.environ["INTRADAY__REGISTRY__AUDIT_TRAIL"] = saved


@pytest.fixture(scope="session", autouse=True)
def tracking_store(tmp_path_factory):
    "The MLflow store the session's trainings, trials and backtests are tracked in (not the project's reports/)."
    where = tmp_path_factory.mktemp("mlflow")
    env = {"INTRADAY__REGISTRY__TRACKING_URI": f"sqlite:///{where}/mlflow.db",
           "INTRADAY__REGISTRY__ARTIFACT_ROOT": str(where / "mlartifacts")}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield where
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def month():
    "A month of seeded synthetic one-minute bars, shared read-only across tests."
    return synth_market(days=30, seed=11)


@pytest.fixture
def bars(month):
    "A small private copy of synthetic bars that a test may damage."
    return month.iloc[:500].copy()


@pytest.fixture(autouse=True)
def _logging_back_to_the_library_default():
    "A test that ran an entry point (setup_logging to a captured stream) leaves no sink behind for the next one."
    yield
    logger.complete()
    logger.remove()
    logger.disable("intraday")
