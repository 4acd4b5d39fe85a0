"""Fixtures shared by the unit tests of the order services' routes."""

from __future__ import annotations

import pytest
from service_fakes import FakeOrders


@pytest.fixture
def orders() -> FakeOrders:
    """An order table in memory for a service's routes (see tests/service_fakes.py)."""
    return FakeOrders()
