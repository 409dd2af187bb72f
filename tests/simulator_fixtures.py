"""Pytest plugin: a real Protecto simulator on a free local port, and a client pointed at it.

Loaded from tests/conftest.py through `pytest_plugins`. Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.simulator import ProtectoSimulator, SimulatorConfig
from protecto import ProtectoClient


def fast_config(**changes: object) -> SimulatorConfig:
    """Simulator settings for tests: seeded, quiet, short plans (scans finish within a second)."""
    settings = {
        "seed": 1,
        "quiet": True,
        "pending_seconds": (0.2, 0.4),
        "running_seconds": (0.2, 0.4),
        # Short hangs, so a test that provokes one is over quickly even if the client waited it out.
        "hang_seconds": 2.0,
        "retry_after": 1,
    }
    settings.update(changes)
    return SimulatorConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
def simulator() -> Iterator[ProtectoSimulator]:
    """A started simulator (seed 1, fast plan, quiet) on 127.0.0.1, stopped after the test."""
    with ProtectoSimulator(fast_config()) as sim:
        yield sim


@pytest.fixture
def protecto_client(simulator: ProtectoSimulator) -> Iterator[ProtectoClient]:
    """A ProtectoClient for the simulator with test-sized timeouts, backoff and batches."""
    client = ProtectoClient(
        base_url=simulator.url,
        token=simulator.config.token,
        timeout=2,
        backoff=0.01,
        max_retries=2,
        batch_size=10,
    )
    yield client
    client.close()
