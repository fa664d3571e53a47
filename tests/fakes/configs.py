"""The config file of a bot or CLI process run on loopback by a test: the Runware simulator (and the
fake Discord) as its services, quick polls and edits, two retries, no limits in the way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def loopback_config(path: Path, *, runware_url: str, db_path: Path, discord_url: str | None = None,
                    **sections: dict[str, Any]) -> Path:
    """Write the config to ``path``; ``sections`` add or replace keys (``runware={"poll_interval_s": 0.1}``)."""
    data: dict[str, dict[str, Any]] = {
        "runware": {"api_url": runware_url, "download_hosts": ["127.0.0.1"], "first_poll_after_s": 0.05,
                    "poll_interval_s": 0.05, "request_timeout_s": 10.0, "max_retries": 2},
        "storage": {"path": db_path.as_posix()},
        "progress": {"min_edit_interval_s": 0.05},
        "limits": {name: "unlimited" for name in ("daily_videos", "monthly_usd", "max_concurrent",
                                                  "guild_monthly_usd", "global_daily_usd")},
    }
    if discord_url is not None:
        data = {"discord": {"api_base_url": discord_url, "attachment_hosts": ["127.0.0.1"]}, **data}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    text = "\n".join(f"[{section}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())
                     for section, values in data.items())
    path.write_text(text, encoding="utf-8")
    return path
