"""Downloaded videos do not pile up: the Discord sink removes the ones past Runware's ttl."""

import os
import time
from types import SimpleNamespace

from bot.config import Config
from bot.discordbot.sink import PRUNE_EVERY_S, DiscordSink


async def test_old_downloads_are_pruned_hourly(tmp_path):
    cfg = Config.model_validate({"storage": {"path": str(tmp_path / "klingbot.sqlite3")},
                                 "runware": {"output_ttl_s": 3600}})
    sink = DiscordSink(SimpleNamespace(cfg=cfg))
    folder = sink.downloads
    folder.mkdir()
    now = time.time()
    old, fresh = folder / "job1-a.mp4", folder / "job2-b.mp4"
    for path in (old, fresh):
        path.write_bytes(b"video")
    os.utime(old, (now - 7200, now - 7200))

    assert await sink.prune_downloads(now) == 1
    assert not old.exists() and fresh.exists()

    os.utime(fresh, (now - 7200, now - 7200))
    assert await sink.prune_downloads(now + 10) == 0  # at most once an hour
    assert await sink.prune_downloads(now + PRUNE_EVERY_S) == 1
    assert not fresh.exists()
