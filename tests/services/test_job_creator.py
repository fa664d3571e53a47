"""A job whose frames its creator is still uploading, in ANOTHER process (`klingbot generate` beside
the bot on one database), is left alone; one whose creator died before uploading is failed and
released at once."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections import Counter

from PIL import Image

from bot.db.jobs import get_job
from bot.db.money import ledger_for_job
from bot.requests import resolve_request
from bot.runware.models import new_task_uuid
from bot.services.jobs import JobStore
from bot.services.queue import CLAIM_TTL_S, HOST
from tests.fakes.engine_world import TERMINAL


async def job_from(engine, run_id: str):
    """A job created (reserved) by the process ``run_id``, whose first frame is not uploaded yet."""
    other = JobStore(engine.db, engine.quotas, engine.clock, engine.cfg.progress.tz, run_id=run_id)
    request = resolve_request(engine.cfg, prompt="a fox in the snow", first_frame_size=(1280, 720))
    return await other.create(
        TERMINAL, channel_id=0, model_key=request.model_key, params=request.model_dump(mode="json"),
        task_uuid=new_task_uuid(), duration_s=request.duration, variations=1,
        estimate_micro=request.estimate_micro,
    )


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (1280, 720), "orange").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_live_creator_still_uploading_is_waited_for(engine_world, manual_sim):
    engine, clock, _ = engine_world
    job = await job_from(engine, f"{HOST}:{os.getppid()}:generate")
    await engine.tick()
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "queued"
    assert manual_sim.stats.submits == 0
    # Its creator finishes the upload: the next tick submits it.
    await engine.store.set_image_uuids(job.id, {"first": await engine.client.upload_image(png_data_uri())})
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "submitted"


async def test_a_dead_creator_lost_the_frames(engine_world, manual_sim):
    engine, _, _ = engine_world
    job = await job_from(engine, f"{HOST}:{dead_pid()}:killed")
    await engine.tick()
    job = await get_job(engine.db, job.id)
    assert job.state == "failed" and "restarted before your images were uploaded" in job.error
    assert Counter(r.kind for r in await ledger_for_job(engine.db, job.id)) == {"reserve": 1, "release": 1}
    assert manual_sim.stats.submits == 0


async def test_a_live_creator_that_never_uploads_is_given_up_after_the_claim_ttl(engine_world, manual_sim):
    engine, clock, _ = engine_world
    job = await job_from(engine, f"{HOST}:{os.getppid()}:stuck")
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "queued"
    clock.advance(CLAIM_TTL_S)
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "failed"
