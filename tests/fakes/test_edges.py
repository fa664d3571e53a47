"""The fake Discord at the platform's edges: the message nonce, a post stored but never answered,
30046 on old messages, and per-channel limits on creates and edits with Discord's headers."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fakes.discord import FakeDiscord


@pytest.fixture
async def fake():
    async with FakeDiscord() as fake:
        fake.seed_default()
        yield fake


async def request(fake: FakeDiscord, method: str, path: str, body: dict | None = None
                  ) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as http, http.request(
            method, fake.api_base_url + path, json=body, headers={"Authorization": f"Bot {fake.token}"}) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else {}), dict(r.headers)


def create(channel_id: int, nonce: str | None = "kb-j1-r", enforce: bool = True, text: str = "hi") -> tuple:
    body: dict = {"content": text}
    if nonce is not None:
        body.update(nonce=nonce, enforce_nonce=enforce)
    return "POST", f"/channels/{channel_id}/messages", body


async def test_the_same_nonce_returns_the_earlier_message_and_creates_none(fake) -> None:
    channel = fake.seed_default().channel_id
    _, first, _ = await request(fake, *create(channel, text="first"))
    status, again, _ = await request(fake, *create(channel, text="second"))
    assert status == 200 and again["id"] == first["id"] and again["content"] == "first"
    assert again["nonce"] == "kb-j1-r"
    assert [m.content for m in fake.messages(channel)] == ["first"] and fake.nonce_hits == 1
    # Another nonce, or the nonce without enforce_nonce, creates.
    await request(fake, *create(channel, nonce="kb-j2-r", text="other job"))
    await request(fake, *create(channel, enforce=False, text="not enforced"))
    assert [m.content for m in fake.messages(channel)] == ["first", "other job", "not enforced"]


async def test_a_nonce_is_per_channel_and_lapses_after_the_window(fake) -> None:
    channel = fake.seed_default().channel_id
    other = 1_100_000_000_000_000_099
    fake.add_channel(fake.seed_default().guild_id, other, "other")
    _, first, _ = await request(fake, *create(channel))
    _, elsewhere, _ = await request(fake, *create(other))
    assert elsewhere["id"] != first["id"]
    fake.message(int(first["id"])).created_at -= fake.nonce_window_s + 1
    _, later, _ = await request(fake, *create(channel, text="later"))
    assert later["id"] != first["id"] and len(fake.messages(channel)) == 2


async def test_a_nonce_whose_first_message_was_deleted_does_not_block_a_new_create(fake) -> None:
    channel = fake.seed_default().channel_id
    _, first, _ = await request(fake, *create(channel, text="first"))
    fake.delete_message(int(first["id"]))
    _, second, _ = await request(fake, *create(channel, text="second"))
    assert second["id"] != first["id"] and second["content"] == "second"
    # The new one now answers for the nonce.
    _, third, _ = await request(fake, *create(channel, text="third"))
    assert third["id"] == second["id"]


async def test_a_stop_after_storing_keeps_the_post_and_drops_the_answer(fake) -> None:
    channel = fake.seed_default().channel_id
    seen = []
    stored = fake.stop_after_storing(lambda m: m.content == "result", then=seen.append)
    await request(fake, *create(channel, nonce="kb-j1-p", text="progress"))
    with pytest.raises(aiohttp.ClientError):
        await request(fake, *create(channel, text="result"))
    message = await stored
    assert seen == [message] and message.content == "result" and not message.deleted
    # The bot's retry with the same nonce gets the stored message; the stop fired once only.
    status, again, _ = await request(fake, *create(channel, text="result"))
    assert status == 200 and int(again["id"]) == message.id
    assert [m.content for m in fake.messages(channel)] == ["progress", "result"]


async def test_an_old_message_takes_only_a_few_edits_an_hour(fake) -> None:
    channel = fake.seed_default().channel_id
    _, old, _ = await request(fake, *create(channel, nonce=None, text="old"))
    _, young, _ = await request(fake, *create(channel, nonce=None, text="young"))
    fake.message(int(old["id"])).created_at -= 3601
    statuses = [(await request(fake, "PATCH", f"/channels/{channel}/messages/{old['id']}",
                               {"content": f"edit {n}"}))[:2] for n in range(fake.old_message_edits_per_hour + 1)]
    assert [s for s, _ in statuses] == [200] * fake.old_message_edits_per_hour + [400]
    assert statuses[-1][1]["code"] == 30046
    assert fake.message(int(old["id"])).content == f"edit {fake.old_message_edits_per_hour - 1}"
    for n in range(5):
        status, _, _ = await request(fake, "PATCH", f"/channels/{channel}/messages/{young['id']}",
                                     {"content": f"young {n}"})
        assert status == 200


async def test_creates_and_edits_have_their_own_window_per_channel(fake) -> None:
    channel = fake.seed_default().channel_id
    fake.channel_rate_limit = (2, 30.0)
    answers = [await request(fake, *create(channel, nonce=None, text=f"m{n}")) for n in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert answers[0][2]["X-RateLimit-Limit"] == "2" and answers[1][2]["X-RateLimit-Remaining"] == "0"
    limited = answers[2]
    assert limited[1]["retry_after"] > 0 and limited[1]["global"] is False and "Via" in limited[2]
    assert limited[2]["X-RateLimit-Bucket"] == answers[0][2]["X-RateLimit-Bucket"]
    # Edits are limited apart from creates: the create window being spent does not stop them.
    message_id = answers[0][1]["id"]
    edits = [await request(fake, "PATCH", f"/channels/{channel}/messages/{message_id}", {"content": f"e{n}"})
             for n in range(3)]
    assert [e[0] for e in edits] == [200, 200, 429]
    assert edits[0][2]["X-RateLimit-Bucket"] != answers[0][2]["X-RateLimit-Bucket"]
    assert fake.count_429 == 2 and len(fake.messages(channel)) == 2
