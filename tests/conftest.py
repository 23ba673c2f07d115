"""Shared test fixtures.

Tests that read ``../shared/data`` (real annotations, official evaluation outputs, real
videos) skip with a clear reason when that folder is not beside the checkout.
"""

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"reference data not found at {SHARED_DATA} (the ../shared/data folder beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
