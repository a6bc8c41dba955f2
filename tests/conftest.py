"""Shared test fixtures: the real sample data lives in ../shared/data beside the repository."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
QUICKDRAW = SHARED_DATA / "quickdraw"
TAXI = SHARED_DATA / "taxi"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SHARED_DATA}; put ../shared beside the repo "
                    "or set SHARED_DATA")
    return SHARED_DATA
