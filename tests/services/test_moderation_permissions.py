"""The permission rule: who moderates a guild, who may act on a job."""

from dataclasses import replace

from bot.db.records import GuildSettings, JobRecord
from bot.services.moderation.permissions import is_moderator, may_manage_job
from bot.services.quotas import Member

G, MOD_ROLE = 1, 77
SETTINGS = GuildSettings(guild_id=G, mod_role_id=MOD_ROLE)
JOB = JobRecord(
    id=5, guild_id=G, channel_id=10, user_id=100, model_key="kling-2.5-turbo-pro", params={}, task_uuid="t",
    image_uuids={}, duration_s=5, variations=1, estimate_micro=1, state="queued", error=None,
    failed_variations=0, cancel_requested=False, cancelled_by=None, created_at=0.0, day="d", month="m",
    claimed_by=None, claimed_at=None, submitted_at=None, finished_at=None, notified_at=None,
    next_poll_at=None, last_polled_at=None, progress_message_id=None, result_message_id=None,
    upload_limit=None, parent_job_id=None,
)


def test_manage_server_or_the_moderator_role_moderates():
    assert is_moderator(Member(G, 1), SETTINGS, manages_guild=True)
    assert is_moderator(Member(G, 2, role_ids=(5, MOD_ROLE)), SETTINGS, manages_guild=False)
    assert not is_moderator(Member(G, 3, role_ids=(5,)), SETTINGS, manages_guild=False)
    assert not is_moderator(Member(G, 4), replace(SETTINGS, mod_role_id=None), manages_guild=False)


def test_nobody_moderates_outside_a_guild():
    assert not is_moderator(Member(0, 1, role_ids=(MOD_ROLE,)), SETTINGS, manages_guild=True)


def test_a_job_is_its_owners_or_a_moderators():
    assert may_manage_job(JOB, Member(G, 100), moderator=False)
    assert may_manage_job(JOB, Member(G, 200), moderator=True)
    assert not may_manage_job(JOB, Member(G, 200), moderator=False)
