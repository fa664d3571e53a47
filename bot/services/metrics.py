"""Prometheus metrics (SPEC 2.4; the names and labels are fixed: dashboards and alerts rely on them).

Counters and histograms count what happened in THIS process (they start at 0 at each start): the
job store reports final states, settled costs and delivered results, the Runware client each HTTP
request, the Discord package each REST response. Gauges are read from the database at scrape time
with one cheap aggregate (indexed columns), so they are right whichever process did the work.

Each ``Metrics`` has its own CollectorRegistry (never prometheus-client's global one), so several
bots in one process (tests, bench) do not share or clash. ``MetricsServer`` serves them with aiohttp
on the bot's own event loop: a scrape awaits one database read (in the database's thread) and
renders a few dozen series, so it never blocks the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder

from bot.db import Database
from bot.db.metrics import gauge_counts
from bot.db.records import FINAL_STATES
from bot.services.quotas import RUNWARE_PAUSE_KEY

log = logging.getLogger(__name__)

# The Runware task types the client sends, and how a request ended (see RunwareClient).
RUNWARE_TASKS = ("videoInference", "getResponse", "imageUpload", "promptEnhance")
RUNWARE_OUTCOMES = ("ok", "rejected", "refused", "rate_limited", "server_error", "transport_error")
# A video takes from half a minute to the deadline (30 min by default).
JOB_SECONDS_BUCKETS = (15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)
# Fetched -> posted: pacing and uploads; SPEC 6's bar is p99 < 5 s.
POST_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)


@dataclass(frozen=True)
class JobFinished:
    """What one job-store transaction did that the metrics count (emitted after it committed)."""

    model: str
    state: str | None          # the final state it reached now; None for a late settle only
    submitted_at: float | None
    finished_at: float
    settled_micro: int | None  # a settle row written now, in micro-USD


class Metrics:
    def __init__(self, models: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_finished = Counter(
            "klingbot_jobs_finished", "Jobs that reached a final state in this process.",
            ["model", "state"], registry=r)
        self.videos_delivered = Counter(
            "klingbot_videos_delivered", "Videos (results) posted in Discord.", ["model"], registry=r)
        self.spend_usd = Counter(
            "klingbot_spend_usd", "Settled Runware cost in USD (the ledger's settle rows).", ["model"], registry=r)
        self.runware_requests = Counter(
            "klingbot_runware_requests", "HTTP requests to Runware by task type and outcome.",
            ["task", "outcome"], registry=r)
        self.discord_requests = Counter(
            "klingbot_discord_requests", "Discord REST responses by request kind and HTTP status.",
            ["kind", "status"], registry=r)
        self.job_seconds = Histogram(
            "klingbot_job_seconds", "Seconds from submit to Runware to the job's final state.",
            ["model"], buckets=JOB_SECONDS_BUCKETS, registry=r)
        self.result_post_seconds = Histogram(
            "klingbot_result_post_seconds", "Seconds from a result fetched from Runware to it posted in Discord.",
            buckets=POST_SECONDS_BUCKETS, registry=r)
        self.queue_depth = Gauge("klingbot_queue_depth", "Jobs waiting in the fair queue.", registry=r)
        self.jobs_in_flight = Gauge("klingbot_jobs_in_flight", "Jobs at Runware (submitted or processing).",
                                    registry=r)
        self.paused = Gauge("klingbot_paused", "1 while generation is paused bot-wide (Runware refused the key "
                            "or the balance), else 0.", registry=r)
        self.guilds_paused = Gauge("klingbot_guilds_paused", "Guilds where a moderator paused generation.",
                                   registry=r)
        # Known label values start at 0, so rate() and absent-series alerts work from the first scrape.
        for model in models:
            self.videos_delivered.labels(model)
            self.spend_usd.labels(model)
            self.job_seconds.labels(model)
            for state in FINAL_STATES:
                self.jobs_finished.labels(model, state)
        for task in RUNWARE_TASKS:
            for outcome in RUNWARE_OUTCOMES:
                self.runware_requests.labels(task, outcome)

    # ---- events (called where they happen) -------------------------------------------------------

    def job_events(self, events: Iterable[JobFinished]) -> None:
        for event in events:
            if event.state is not None:
                self.jobs_finished.labels(event.model, event.state).inc()
                if event.submitted_at is not None:
                    self.job_seconds.labels(event.model).observe(max(0.0, event.finished_at - event.submitted_at))
            if event.settled_micro:
                self.spend_usd.labels(event.model).inc(event.settled_micro / 1_000_000)

    def video_delivered(self, model: str, fetched_at: float, posted_at: float) -> None:
        self.videos_delivered.labels(model).inc()
        self.result_post_seconds.observe(max(0.0, posted_at - fetched_at))

    def runware_request(self, task: str, outcome: str) -> None:
        self.runware_requests.labels(task, outcome).inc()

    def discord_request(self, kind: str, status: str) -> None:
        self.discord_requests.labels(kind, status).inc()

    # ---- gauges and rendering ----------------------------------------------------------------------

    async def refresh_gauges(self, db: Database) -> None:
        counts = await db.run(gauge_counts, RUNWARE_PAUSE_KEY)
        self.queue_depth.set(counts.queued)
        self.jobs_in_flight.set(counts.at_runware)
        self.paused.set(1 if counts.runware_paused else 0)
        self.guilds_paused.set(counts.guilds_paused)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` on ``[metrics] listen`` (HOST:PORT), Prometheus text format."""

    def __init__(self, metrics: Metrics, db: Database, listen: str) -> None:
        self.metrics = metrics
        self.db = db
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/metrics", self._scrape)])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(f"metrics.listen = {self.host}:{self.port}: cannot listen: {exc.strerror}") from None
        self.port = self._runner.addresses[0][1]  # the real one when the config said port 0
        log.info("metrics at http://%s:%s/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def _scrape(self, request: web.Request) -> web.Response:
        try:
            await self.metrics.refresh_gauges(self.db)
        except Exception as exc:  # the counters are still worth serving; the gauges keep their last values
            log.warning("metrics: reading the gauges failed (%s: %s)", type(exc).__name__, exc)
        # The format the scraper asks for: Prometheus text 0.0.4 by default, OpenMetrics on request.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.metrics.registry), headers={"Content-Type": content_type})
