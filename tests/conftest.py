from pathlib import Path

import pytest

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
