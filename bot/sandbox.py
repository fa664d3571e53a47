"""--sandbox: the built-in Runware simulator, in-process on a free loopback port, with its own
database so sandbox jobs never count against real quotas or usage."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import SecretStr

from bot.config import Config

SANDBOX_API_KEY = "sandbox"
SANDBOX_SPEED = 20.0        # a 5 s video "generates" in 3 s
SANDBOX_POLL_S = 0.5


def sandbox_db_path(path: str) -> str:
    """``data/klingbot.sqlite3`` -> ``data/klingbot.sandbox.sqlite3`` (SPEC 2.1)."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}.sandbox{p.suffix}"))


def sandbox_config(cfg: Config, simulator_url: str) -> Config:
    runware = cfg.runware.model_copy(
        update={
            "api_url": simulator_url,
            "download_hosts": [*cfg.runware.download_hosts, "127.0.0.1"],
            "first_poll_after_s": min(cfg.runware.first_poll_after_s, SANDBOX_POLL_S),
            "poll_interval_s": min(cfg.runware.poll_interval_s, SANDBOX_POLL_S),
            "webhook_public_url": "",
        }
    )
    # Always a SQLite file beside storage.path, also when PostgreSQL is configured: sandbox jobs never
    # count against real quotas or usage.
    storage = cfg.storage.model_copy(update={"path": sandbox_db_path(cfg.storage.path), "url": SecretStr("")})
    secrets = cfg.secrets.model_copy(update={"database_url": None})
    return cfg.model_copy(update={"runware": runware, "storage": storage, "secrets": secrets})


def sandbox_key() -> SecretStr:
    return SecretStr(SANDBOX_API_KEY)


async def enter_sandbox(stack: contextlib.AsyncExitStack, cfg: Config) -> tuple[Config, SecretStr]:
    """Start the simulator on the stack; return the config pointed at it and the key it accepts."""
    from bot.simulator.server import run_simulator

    sim = await stack.enter_async_context(run_simulator(api_key=SANDBOX_API_KEY, speed=SANDBOX_SPEED))
    return sandbox_config(cfg, sim.url), sandbox_key()
