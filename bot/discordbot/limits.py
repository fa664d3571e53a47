"""Discord's own limits and error codes that the bot's messages and uploads stay within (read in
Discord's documentation; see NOTES)."""

import discord

CONTENT_MAX = 2000                       # characters of a message's content
DESCRIPTION_MAX = 4096                   # characters of an embed's description
FIELD_MAX = 1024                         # characters of an embed field's value
MAX_FILES = 10                           # attachments on one message
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes per file for a bot, unless Discord says more
TOO_LARGE = 40005                        # "request entity too large": a file over the upload limit
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
TOO_MANY_OLD_EDITS = 30046               # edits of a message older than an hour: Discord caps them
NONCE_MAX = 25                           # characters of a message nonce


def too_large(exc: discord.HTTPException) -> bool:
    """Discord refused the files as over the upload limit."""
    return exc.code == TOO_LARGE or exc.status == 413


def is_lost_channel(exc: discord.HTTPException) -> bool:
    """The channel is gone (404 10003) or closed to the bot (any 403)."""
    return isinstance(exc, discord.Forbidden) or (isinstance(exc, discord.NotFound) and exc.code == UNKNOWN_CHANNEL)
