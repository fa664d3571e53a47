"""Loopback stand-ins for outside services used by tests and the bench (see tests/fakes/discord.py)."""
