"""What a member does with a finished job (SPEC 2.3): Extend (the last frame of one of its videos
becomes the first frame of a new job with the same prompt and parameters) and Remix (a new prompt,
negative prompt and CFG scale over the same frames). Both are new jobs charged to whoever asks,
under their own quota; the requests are built here, and reserved and uploaded by the engine only
once the member has confirmed (the Discord layer asks first when the cost is high).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.db.jobs import get_job, results_for_job
from bot.db.records import JobRecord, ResultRecord
from bot.download import DownloadError, download_to_file
from bot.errors import UserFacingError
from bot.images import CheckedImage, check_image_async
from bot.requests import ResolvedRequest, resolve_request
from bot.services.delivery import MAX_FIT_SOURCE
from bot.services.enhance import made_request
from bot.services.media import MediaError
from bot.services.quotas import Member

if TYPE_CHECKING:
    from bot.services.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedJob:
    """A job ready to be reserved: the request, its frames, and the job it came from."""

    source: JobRecord
    request: ResolvedRequest
    first: CheckedImage | None = None          # a frame to upload (Extend's last frame)
    image_uuids: dict[str, str] | None = None  # frames already at Runware (Remix reuses them)


async def source_job(engine: Engine, job_id: int, guild_id: int) -> JobRecord:
    job = await get_job(engine.db, job_id)
    if job is None or job.guild_id != guild_id:
        raise UserFacingError(f"There is no job #{job_id} here.")
    return job


async def videos_of(engine: Engine, job: JobRecord) -> list[ResultRecord]:
    """The job's videos a member can extend (delivered, not withheld), in order."""
    return [r for r in await results_for_job(engine.db, job.id) if r.video_url and not r.nsfw]


def _params(job: JobRecord) -> ResolvedRequest:
    return made_request(job)  # an enhanced job's prompt is the enhancer's text (not enhanced again)


async def plan_extend(engine: Engine, job: JobRecord, video: int) -> PlannedJob:
    """Extend video ``video`` (1-based) of ``job``: its last frame, checked like an attachment. A loop
    stays a loop: the extension ends on its own new first frame."""
    if job.state != "succeeded":
        raise UserFacingError(f"Job #{job.id} has no finished video to extend.")
    videos = await videos_of(engine, job)
    if not 1 <= video <= len(videos):
        raise UserFacingError(f"Job #{job.id} has no video {video} to extend.")
    result = videos[video - 1]
    path = await _original_video(engine, job, result)
    try:
        png = await engine.deliverer.media.last_frame(path)
    except MediaError as exc:
        raise UserFacingError(f"The last frame of job #{job.id}'s video could not be read: {exc.message}.") from None
    frame = await check_image_async(png, field="first_frame")
    source = _params(job)
    request = resolve_request(
        engine.cfg, prompt=source.prompt, model=source.model_key, duration=source.duration, aspect=source.aspect,
        negative_prompt=source.negative_prompt, cfg_scale=source.cfg_scale, variations=source.variations,
        output_format=source.output_format, quality=source.quality,
        first_frame_size=(frame.width, frame.height), has_last_frame=False, loop=source.loop,
    ).model_copy(update={"extends_job_id": job.id, "extends_video": video, "origin": "extend"})
    return PlannedJob(source=job, request=request, first=frame)


async def _original_video(engine: Engine, job: JobRecord, result: ResultRecord) -> Path:
    """The full-quality video on disk: downloaded at delivery, else fetched again while Runware's
    link lasts (the fitted copy is smaller and re-encoded: not the frame to continue from)."""
    path = engine.deliverer.original_path(job, result)
    if path.is_file():
        return path
    try:
        await download_to_file(engine.http, result.video_url or "", path,
                               allowed_hosts=engine.cfg.runware.download_hosts, max_bytes=MAX_FIT_SOURCE,
                               what="video")
    except DownloadError as exc:
        log.info("job %s: the video to extend could not be fetched (%s)", job.id, exc.message)
        raise UserFacingError(f"Job #{job.id}'s video is no longer available to extend (Runware keeps "
                              "videos for a limited time).") from None
    return path


def plan_remix(engine: Engine, job: JobRecord, *, prompt: str, negative_prompt: str | None,
               cfg_scale: float | None) -> PlannedJob:
    """Remix ``job``: the new texts and CFG scale, every other parameter and the frames as they were."""
    source = _params(job)
    uuids = dict(job.image_uuids or {})
    missing = [n for n, has in (("first", source.has_first_frame), ("last", source.has_last_frame))
               if has and n not in uuids]
    if missing:
        raise UserFacingError(f"Job #{job.id}'s frames were never uploaded, so it cannot be remixed.")
    request = resolve_request(
        engine.cfg, prompt=prompt, model=source.model_key, duration=source.duration, aspect=source.aspect,
        negative_prompt=negative_prompt or None, cfg_scale=cfg_scale, variations=source.variations,
        output_format=source.output_format, quality=source.quality,
        first_frame_size=(source.width, source.height) if source.has_first_frame else None,
        has_last_frame=source.has_last_frame, loop=source.loop,
    ).model_copy(update={"origin": "remix"})
    return PlannedJob(source=job, request=request, image_uuids=uuids)


async def start(engine: Engine, plan: PlannedJob, member: Member, *, channel_id: int,
                upload_limit: int | None) -> JobRecord:
    """Reserve (every limit checked in one transaction), upload the new frame, queue the job."""
    return await engine.create_job(
        member, plan.request, channel_id=channel_id, first=plan.first, upload_limit=upload_limit,
        parent_job_id=plan.source.id, image_uuids=plan.image_uuids,
    )
