"""Shared fixtures: `world` is a started fake Discord + simulator + the real bot on a temp database
(tests/discord_harness.py)."""

from tests.discord_harness import world  # noqa: F401  (a fixture, found by name)
