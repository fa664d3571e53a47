"""Deterministic message nonces: every message the bot creates for a job is sent with one (and
``enforce_nonce``, which discord.py sets whenever ``nonce=`` is given). Discord answers a create with
the nonce of a message the bot created in the same channel within the past few minutes with that
message, and creates none: a process killed after Discord stored a post, before the bot recorded it,
gets the same message back after the restart instead of posting (and pinging) twice (SPEC 3.4).

A nonce names the job and what the message is, so each message has its own: ``kb-j123-p`` the
progress message, ``kb-j123-r`` the results, ``kb-j123-f`` the failure (or time-out) notice, ``kb-j123-l``
the DM saying the bot lost the channel. A progress message posted because the member deleted the
previous one names that one too (``kb-j123-p`` + 3 characters of its id): the record still holds the
deleted id until the new one is stored, so a restart in between finds the same nonce again. A job's
gallery post (the Share button) is ``kb-j123-g`` in the gallery channel, and ``kb-j123-g`` + 3 characters
of the id of a deleted gallery post it stands in for. Re-posts a member asks for (/job) are interaction
responses, which Discord never de-duplicates.
"""

from __future__ import annotations

from bot.discordbot.limits import NONCE_MAX

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int, width: int) -> str:
    out = ""
    for _ in range(width):
        value, digit = divmod(value, 36)
        out = _DIGITS[digit] + out
    return out


def _nonce(job_id: int, kind: str) -> str:
    nonce = f"kb-j{job_id}-{kind}"
    assert len(nonce) <= NONCE_MAX, nonce  # job ids stay below 2^53 (16 digits): at most 25
    return nonce


def progress_nonce(job_id: int, replacing: int | None = None) -> str:
    """The job's progress message; ``replacing`` is the id of a deleted one this one stands in for."""
    return _nonce(job_id, "p" if replacing is None else "p" + _base36(replacing, 3))


def final_nonce(job_id: int, succeeded: bool) -> str:
    """The results message, or the failure notice (a timed-out job's notice and its late results are
    two messages: two nonces)."""
    return _nonce(job_id, "r" if succeeded else "f")


def lost_channel_nonce(job_id: int) -> str:
    return _nonce(job_id, "l")


def gallery_nonce(job_id: int, replacing: int | None = None) -> str:
    """The job's post in its guild's gallery; ``replacing`` is the id of a deleted one it stands in for."""
    return _nonce(job_id, "g" if replacing is None else "g" + _base36(replacing, 3))
