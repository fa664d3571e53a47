"""Shared fixtures: `world` is a started fake Discord + simulator + the real bot on a temp database
(tests/fakes/world.py)."""

from tests.fakes.world import world  # noqa: F401  (a fixture, found by name)
