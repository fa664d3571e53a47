"""Rendering: pure functions of records (no Discord, no clock)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bot.discordbot import render_job
from bot.services.sink import Outcome, ProgressUpdate, ResultFile
from tests.fakes.records import T0
from tests.fakes.records import job_record as job
from tests.fakes.records import result_record as result


def test_helpers():
    assert render_job.fmt_seconds(42) == "42 s"
    assert render_job.fmt_seconds(65) == "1 min 05 s"
    assert render_job.fmt_seconds(3720) == "1 h 02 min"
    assert render_job.progress_bar(0.0) == "▱" * 10
    assert render_job.progress_bar(0.55) == "▰" * 5 + "▱" * 5
    assert render_job.progress_bar(7) == "▰" * 10
    assert render_job.discord_time(T0 + 0.9) == f"<t:{int(T0)}:R>"
    assert render_job.jump_url(10, 20, 30) == "https://discord.com/channels/10/20/30"
    assert render_job.jump_url(0, 20, 30) == "https://discord.com/channels/@me/20/30"
    assert render_job.clip("abcdef", 4) == "abc…"


def test_queued_progress_shows_everything_the_member_needs():
    update = ProgressUpdate(job=job(), phase="queued", elapsed_s=3.0, queue_position=3)
    embed = render_job.progress_embed(update, "Kling 2.5 Turbo Pro")
    data = embed.to_dict()
    assert data["title"] == "Job #42 · Kling 2.5 Turbo Pro"
    fields = {f["name"]: f["value"] for f in data["fields"]}
    assert fields == {"Size": "1280×720 (16:9)", "Duration": "5 s", "Variations": "2", "Reserved": "$0.70"}
    assert "position 3 in the queue" in data["description"]
    assert f"<t:{int(T0)}:R>" in data["description"]
    assert "<@30>" in data["description"]
    # The prompt is shown verbatim: Markdown is escaped, not interpreted.
    assert r"a \*red\* fox" in data["description"]


def test_progress_render_only_changes_when_something_visible_changes():
    running = job(state="processing", submitted_at=T0 + 5)
    a = ProgressUpdate(job=running, phase="processing", elapsed_s=11.0, estimate_s=100.0)
    b = ProgressUpdate(job=running, phase="processing", elapsed_s=19.0, estimate_s=100.0)
    c = ProgressUpdate(job=running, phase="processing", elapsed_s=21.0, estimate_s=100.0)
    key = lambda u: render_job.render_key(render_job.progress_embed(u, "K"))  # noqa: E731
    assert key(a) == key(b)          # both "10%": no edit needed
    assert key(b) != key(c)          # 20%: the bar moved
    text = render_job.progress_embed(c, "K").description
    assert "about 20%" in text and "▰▰▱" in text and f"<t:{int(T0 + 5)}:R>" in text
    # Without an estimate (first job of its kind) the text does not change with time at all.
    d = ProgressUpdate(job=running, phase="processing", elapsed_s=1.0)
    e = ProgressUpdate(job=running, phase="processing", elapsed_s=500.0)
    assert key(d) == key(e)
    late = ProgressUpdate(job=running, phase="processing", elapsed_s=150.0, estimate_s=100.0)
    assert "taking longer than usual" in render_job.progress_embed(late, "K").description


def test_progress_note_and_cancelling():
    update = ProgressUpdate(job=job(state="submitted", submitted_at=T0, cancel_requested=True),
                            phase="submitted", elapsed_s=5, note="Runware is not answering, retrying")
    text = render_job.progress_embed(update, "K").description
    assert "Cancelling" in text
    assert "Runware is not answering, retrying" in text


def test_result_message_attached_and_linked():
    done = job(state="succeeded", submitted_at=T0 + 5, finished_at=T0 + 70)
    attached = ResultFile(result=result(1, 111), path=Path("/tmp/a.mp4"), size=1000, expires_at=T0 + 86400)
    linked = ResultFile(result=result(2, 222, "https://vid.runware.ai/big.mp4"), path=None,
                        size=30 * 1024 * 1024, expires_at=T0 + 86460)
    outcome = Outcome(job=done, files=[attached, linked], cost_micro=712_345)
    content, embed = render_job.result_message(outcome, "Kling 2.5 Turbo Pro", attached={1},
                                          cap=10 * 1024 * 1024)
    assert content.startswith("<@30> your 2 videos are ready.")
    assert "https://vid.runware.ai/big.mp4" in content
    assert f"expires <t:{int(T0 + 86460)}:R>" in content
    assert "30.0 MB, over the 10 MB upload limit" in content
    assert "/tmp/a.mp4" not in content and "https://vid.runware.ai/v.mp4" not in content
    data = embed.to_dict()
    fields = {f["name"]: f["value"] for f in data["fields"]}
    assert fields["Seeds"] == "111, 222"
    assert fields["Cost"] == "$0.712345"
    assert fields["Time taken"] == "1 min 05 s"
    assert data["description"] == r"a \*red\* fox @everyone"


def test_result_message_names_failures_and_flagged():
    done = job(state="succeeded", submitted_at=T0, finished_at=T0 + 30, variations=3)
    outcome = Outcome(job=done, files=[ResultFile(result(1, 5), Path("/tmp/x.mp4"), 10, None)],
                      failures=["Variation 2: the provider timed out."], flagged=1, cost_micro=None)
    _, embed = render_job.result_message(outcome, "K", attached={1})
    fields = {f["name"]: f["value"] for f in embed.to_dict()["fields"]}
    assert "Variation 2: the provider timed out." in fields["Not delivered"]
    assert "withheld by the content check" in fields["Not delivered"]
    assert fields["Seed"] == "5"
    assert "not reported the cost yet" in fields["Cost"]


def test_failure_message():
    failed = job(state="failed", error="Runware refused the prompt.", finished_at=T0 + 10)
    content, embed = render_job.failure_message(Outcome(job=failed, cost_micro=None), "K")
    assert content.startswith("<@30>")
    assert embed.title.startswith("Job #42 failed")
    assert "Runware refused the prompt." in embed.description
    assert "You were not charged." in embed.description
    timed_out = replace(failed, state="timed_out")
    _, embed = render_job.failure_message(Outcome(job=timed_out, cost_micro=None), "K")
    assert embed.title.startswith("Job #42 timed out")
    _, embed = render_job.failure_message(Outcome(job=failed, cost_micro=100_000), "K")
    assert "Runware billed $0.10" in embed.description


def test_finished_line_and_queued_reply():
    url = "https://discord.com/channels/10/20/99"
    assert render_job.finished_line(job(state="succeeded"), url) == f"✅ Job #42 is finished: {url}"
    assert render_job.finished_line(job(state="failed"), url).startswith("❌ Job #42 failed")
    assert render_job.finished_line(job(state="cancelled"), None) == "🚫 Job #42 was cancelled."
    reply = render_job.queued_reply(job(), progress_url=url, position=4)
    assert "Queued as job #42 (position 4 in the queue)" in reply and url in reply and "$0.70" in reply
    assert "<#20>" in render_job.queued_reply(job(), progress_url=None)
