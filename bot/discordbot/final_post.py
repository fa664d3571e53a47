"""A job's final message: the results (with the videos that fit attached, links for the rest) or the
failure notice, sent with the job's nonce so a post Discord stored before a crash is not made twice."""

from __future__ import annotations

import functools
import logging
from typing import Any

import discord

from bot.discordbot import render_job
from bot.discordbot.limits import MAX_FILES, too_large
from bot.discordbot.nonces import final_nonce
from bot.services.sink import Outcome

log = logging.getLogger(__name__)

async def post_final(target: discord.abc.Messageable, outcome: Outcome, *, label: str, cap: int, attach: bool,
                     mentions: discord.AllowedMentions, extra: dict[str, Any]) -> discord.Message:
    """Post the final message in ``target``. A file Discord refuses as too large (40005; it does not say
    which) costs the largest attached one its place: that one becomes a link and the rest are sent
    again, under the same nonce (a refused create stored nothing)."""
    job = outcome.job
    send = functools.partial(target.send, allowed_mentions=mentions,
                             nonce=final_nonce(job.id, job.state == "succeeded"), **extra)
    if job.state != "succeeded":
        content, embed = render_job.failure_message(outcome, label)
        return await send(content=content, embed=embed)
    # (result, the file to attach, its size): the fitted copy first, else the original.
    fitting = [(f, *found) for f in outcome.files if (found := f.attachment(cap)) is not None][:MAX_FILES] \
        if attach else []
    while fitting:
        content, embed = render_job.result_message(outcome, label, attached={f.result.id for f, _, _ in fitting},
                                                   cap=cap)
        files = [discord.File(path, filename=path.name) for _, path, _ in fitting]
        try:
            return await send(content=content, embed=embed, files=files)
        except discord.HTTPException as exc:
            if not too_large(exc):
                raise
            largest = max(fitting, key=lambda item: item[2])
            fitting.remove(largest)
            log.info("job %s: Discord refused a file as too large; video %s goes as a link", job.id,
                     largest[0].result.video_uuid)
        finally:
            for file in files:
                file.close()
    content, embed = render_job.result_message(outcome, label, attached=(), cap=cap)
    return await send(content=content, embed=embed)
