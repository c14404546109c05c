from pathlib import Path

import pytest
from loguru import logger

from intraday.data import synth_market

ROOT = Path(__file__).resolve().parents[1]


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
