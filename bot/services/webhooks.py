"""Runware's webhooks (SPEC 9): when ``runware.webhook_public_url`` is set, every task is sent with
``webhookURL = {webhook_public_url}?token=<RUNWARE_WEBHOOK_SECRET>`` and Runware POSTs each finished
item to it as ``{"data": [item]}`` (failures as ``{"errors": [item]}``). This module is the receiver:
an aiohttp server on ``runware.webhook_listen``. It checks the token in constant time, groups the
items per task the way the client groups a getResponse answer, and hands each task's TaskStatus to
the engine, which applies it through the poller's own path (so a result that arrives by webhook AND
by poll is recorded, settled and delivered once). The poller keeps running as the safety net.

The signed URL carries the secret: it is kept as a SecretStr and never logged; the access log is
off because it would print the query string.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from pydantic import SecretStr

from bot.config import Config
from bot.errors import UserFacingError
from bot.hosts import is_loopback
from bot.runware.fold import fold_item
from bot.runware.models import TaskStatus, item_task_uuid, split_response

log = logging.getLogger(__name__)

SECRET_ENV = "RUNWARE_WEBHOOK_SECRET"
TOKEN_PARAM = "token"
MAX_BODY_BYTES = 1024 * 1024  # one item is a few hundred bytes; anything near this is not Runware

# Called once per task named in a webhook body; False when no job has that task.
ApplyStatus = Callable[[TaskStatus], Awaitable[bool]]


@dataclass(frozen=True)
class WebhookSettings:
    public_url: str
    path: str          # the path the receiver answers on (that of public_url)
    host: str
    port: int
    secret: SecretStr

    def signed_url(self) -> SecretStr:
        """The webhookURL sent to Runware. A SecretStr, so a stray log line cannot show the token."""
        joiner = "&" if urlsplit(self.public_url).query else "?"
        token = quote(self.secret.get_secret_value(), safe="")
        return SecretStr(f"{self.public_url}{joiner}{TOKEN_PARAM}={token}")



def webhook_settings(cfg: Config) -> WebhookSettings | None:
    """None when webhooks are off. Raises UserFacingError (at start-up) when they are on but set up
    wrong: no secret, or a public URL that is not an http(s) URL."""
    public_url = cfg.runware.webhook_public_url.strip()
    if not public_url:
        return None
    secret = cfg.secrets.runware_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise UserFacingError(
            f"runware.webhook_public_url is set, so {SECRET_ENV} must be set too: put a long random "
            "token in the environment (Runware sends it back in the webhook URL's query), or clear "
            "runware.webhook_public_url to rely on polling alone."
        )
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise UserFacingError(
            f"runware.webhook_public_url must be an http(s) URL without a fragment, got {public_url!r}."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        log.warning("runware.webhook_public_url is plain http: the webhook token travels unencrypted")
    host, _, port = cfg.runware.webhook_listen.rpartition(":")  # validated as HOST:PORT by the config
    return WebhookSettings(
        public_url=public_url,
        path=parts.path or "/",
        host=host.strip("[]"),
        port=int(port),
        secret=secret,
    )


def statuses_from_body(body: Any) -> dict[str, TaskStatus] | None:
    """A webhook body -> one TaskStatus per taskUUID (items without one are dropped); None when the
    body is not Runware's ``{"data": [...]}`` / ``{"errors": [...]}`` envelope."""
    envelope = split_response(body)
    if envelope is None:
        return None
    data, errors = envelope
    statuses: dict[str, TaskStatus] = {}
    for item in [*data, *({**e, "status": "error"} for e in errors)]:
        uuid = item_task_uuid(item)
        if uuid is None:
            log.debug("webhook item without a taskUUID ignored")
            continue
        fold_item(statuses, uuid, item)
    return statuses


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


class WebhookReceiver:
    """The aiohttp server Runware posts to. ``apply`` is the engine's ``apply_webhook``."""

    def __init__(self, settings: WebhookSettings, apply: ApplyStatus) -> None:
        self.settings = settings
        self._apply = apply
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port, once started
        # Counters for tests, the bench and logs.
        self.accepted = 0   # authenticated, well-formed requests
        self.refused = 0    # 401s
        self.unknown = 0    # task uuids no job has
        self._answered = asyncio.Event()
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_post(settings.path, self._handle)

    async def start(self) -> None:
        # access_log=None: aiohttp's access log prints the request line, token included.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.settings.host, self.settings.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise UserFacingError(
                f"The webhook receiver cannot listen on runware.webhook_listen = "
                f"{self.settings.host}:{self.settings.port}: {exc.strerror or exc}."
            ) from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("webhook receiver listening on %s:%s%s", self.settings.host, self.port, self.settings.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_accepted(self, n: int) -> None:
        """Until ``n`` requests have been accepted and applied (tests and the bench)."""
        while self.accepted < n:
            self._answered.clear()
            await self._answered.wait()

    def _authorized(self, request: web.Request) -> bool:
        token = request.query.get(TOKEN_PARAM)
        if token is None:
            return False
        return hmac.compare_digest(token.encode(), self.settings.secret.get_secret_value().encode())

    async def _handle(self, request: web.Request) -> web.Response:
        # The token is checked before the body is read: a stranger's body is never parsed.
        if not self._authorized(request):
            self.refused += 1
            log.warning("webhook from %s refused: missing or wrong token", request.remote)
            return _answer(401, {"error": "unauthorized"})
        raw = await request.read()  # over MAX_BODY_BYTES: aiohttp answers 413
        try:
            statuses = statuses_from_body(json.loads(raw))
        except ValueError:  # bad JSON or bad UTF-8
            statuses = None
        if statuses is None:
            return _answer(400, {"error": 'expected JSON {"data": [...]} or {"errors": [...]}'})
        for status in statuses.values():
            try:
                known = await self._apply(status)
            except Exception:
                # Not applied: a non-2xx makes Runware send it again (and the poller is still there).
                log.exception("webhook for task %s could not be applied", status.task_uuid)
                return _answer(500, {"error": "not applied; please retry"})
            if not known:
                # 200 all the same: a retry would not help (a task of another bot, or a deleted job).
                self.unknown += 1
                log.debug("webhook for unknown task %s ignored", status.task_uuid)
        self.accepted += 1
        self._answered.set()
        return _answer(200, {"ok": True})
