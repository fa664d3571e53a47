"""Fixtures of the engine tests: ``manual_sim`` (a simulator that finishes tasks only when told) and
``engine_world`` (engine, clock, recording sink on it; tests/fakes/engine_world.py)."""

import pytest

from tests.fakes.engine_world import engine_world as open_engine_world
from tests.fakes.engine_world import manual_simulator


@pytest.fixture
async def manual_sim():
    async with manual_simulator() as simulator:
        yield simulator


@pytest.fixture
async def engine_world(tmp_path, manual_sim):
    async with open_engine_world(tmp_path, manual_sim) as world:
        yield world
