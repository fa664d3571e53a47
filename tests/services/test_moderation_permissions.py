"""The permission rule: who moderates a guild, who may act on a job."""

from dataclasses import replace

from bot.db.records import GuildSettings
from bot.services.moderation.permissions import is_moderator, may_manage_job
from bot.services.quotas import DM_SCOPE, TERMINAL_SCOPE, Member
from tests.fakes.records import job_record

G, MOD_ROLE = 1, 77
SETTINGS = GuildSettings(guild_id=G, mod_role_id=MOD_ROLE)
JOB = job_record(guild_id=G, user_id=100)


def test_manage_server_or_the_moderator_role_moderates():
    assert is_moderator(Member(G, 1), SETTINGS, manages_guild=True)
    assert is_moderator(Member(G, 2, role_ids=(5, MOD_ROLE)), SETTINGS, manages_guild=False)
    assert not is_moderator(Member(G, 3, role_ids=(5,)), SETTINGS, manages_guild=False)
    assert not is_moderator(Member(G, 4), replace(SETTINGS, mod_role_id=None), manages_guild=False)


def test_nobody_moderates_outside_a_guild():
    for scope in (TERMINAL_SCOPE, DM_SCOPE):
        assert not is_moderator(Member(scope, 1, role_ids=(MOD_ROLE,)), SETTINGS, manages_guild=True)


def test_a_job_is_its_owners_or_a_moderators():
    assert may_manage_job(JOB, Member(G, 100), moderator=False)
    assert may_manage_job(JOB, Member(G, 200), moderator=True)
    assert not may_manage_job(JOB, Member(G, 200), moderator=False)
