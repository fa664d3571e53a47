"""Typed rows built in memory, for tests of pure functions (rendering, rules) that need a job or
a result without a database."""

from __future__ import annotations

from typing import Any

from bot.db.records import JobRecord, ResultRecord

T0 = 1_700_000_000.0


def job_record(**over: Any) -> JobRecord:
    """Job #42: a queued two-variation Kling 2.5 Turbo Pro job; ``over`` replaces fields."""
    params = {
        "model_key": "kling-2.5-turbo-pro", "model_id": "klingai:6@1", "prompt": "a *red* fox @everyone",
        "negative_prompt": None, "aspect": "16:9", "width": 1280, "height": 720, "duration": 5,
        "cfg_scale": None, "variations": 2, "output_format": "MP4", "quality": None,
        "has_first_frame": False, "has_last_frame": False, "estimate_micro": 700_000,
    }
    base: dict[str, Any] = dict(
        id=42, guild_id=10, channel_id=20, user_id=30, model_key="kling-2.5-turbo-pro", params=params,
        task_uuid="t-1", image_uuids={}, duration_s=5, variations=2, estimate_micro=700_000, state="queued",
        error=None, failed_variations=0, cancel_requested=False, cancelled_by=None, created_at=T0, day="d",
        month="m", claimed_by=None, claimed_at=None, submitted_at=None, finished_at=None, notified_at=None,
        next_poll_at=None, last_polled_at=None, progress_message_id=None, result_message_id=None,
        upload_limit=None, parent_job_id=None,
    )
    base.update(over)
    return JobRecord(**base)


def result_record(rid: int, seed: int, url: str = "https://vid.runware.ai/v.mp4") -> ResultRecord:
    """Result ``rid`` of job #42, made a minute after the job, not delivered."""
    return ResultRecord(id=rid, job_id=42, video_uuid=f"v{rid}", video_url=url, seed=seed, cost_micro=350_000,
                        nsfw=False, created_at=T0 + 60, delivered_at=None, local_path=None)
