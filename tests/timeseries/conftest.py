"""Fixtures for the time-series tests (the GeoTIFF writer comes from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread: on a busy 2-core machine a second thread mostly waits."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
