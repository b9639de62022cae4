"""What every service runs beside its own logic: database, broker, outbox relay, health, metrics,
trace context at the HTTP edge, the `migrate` command, serving."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import structlog
import uvicorn
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream.rabbit import RabbitBroker
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lapse_shared import tracing
from lapse_shared.db.migrations import migrate, pending_versions
from lapse_shared.db.outbox import OutboxRelay
from lapse_shared.db.pool import create_pool, ensure_database
from lapse_shared.events import SecurityMessageRejected
from lapse_shared.http.identity import CurrentIdentity
from lapse_shared.http.problems import (
    PROBLEM_BASE,
    PROBLEM_MEDIA_TYPE,
    PROBLEM_RESPONSES,
    ProblemError,
    install_problem_handlers,
)
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.auth import RejectionLog, authenticating, shared_broker_users
from lapse_shared.messaging.consumer import document_publishers, observing
from lapse_shared.messaging.publisher import ConfirmingPublisher, amqp_username
from lapse_shared.messaging.topology import EVENTS, declare_dead_letter_queue, declare_exchanges
from lapse_shared.metrics import ServiceMetrics
from lapse_shared.settings import ServiceSettings

log = structlog.get_logger("lapse.service")


class ServiceHost:
    """Owns the connections and background tasks of one service process.

    `schema`/`migrations` are None for a service without a database (policy).
    """

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        broker: RabbitBroker,
        *,
        schema: str | None = None,
        migrations: str | None = None,
        queues: list[str] | None = None,
        topology: Callable[[AbstractChannel], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.broker = broker
        self.schema = schema
        self._migrations = migrations
        self._queues = queues or []
        # A service's own exchanges/queues (e.g. audit's SIEM stream), declared before the relay runs.
        self._topology = topology
        self._pool: asyncpg.Pool | None = None
        self._amqp: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._publisher: ConfirmingPublisher | None = None
        self._relay: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = ServiceMetrics(name)
        self.metrics.start_at_zero(self._queues)
        self.rejections = RejectionLog(
            name,
            self.metrics.registry,
            settings.security_report_interval_seconds,
            report=self._report_rejection,
        )
        # Before any handler: a message its publisher may not produce is never acted on.
        broker.insert_middleware(authenticating(settings.producers(), self.rejections))
        shared = shared_broker_users(settings.broker_users)
        if shared:
            # Not refused: a one-user test broker is legitimate; but say loudly what it costs.
            log.error(
                "LAPSE_BROKER_USERS gives several services one broker user: the producer check"
                " cannot tell them apart, so compromising one of them is compromising all",
                shared=shared,
            )
        # Outermost, so even a rejected message's log lines carry its trace id.
        broker.insert_middleware(observing(self.metrics))
        document_publishers(broker, [SecurityMessageRejected])
        if schema is not None:
            self.metrics.add_refresher(self._refresh_outbox_metrics)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "service has no database or is not started"
        return self._pool

    @property
    def publisher(self) -> ConfirmingPublisher:
        assert self._publisher is not None, "service is not started"
        return self._publisher

    @property
    def channel(self) -> AbstractRobustChannel:
        assert self._channel is not None, "service is not started"
        return self._channel

    async def start(self) -> None:
        s = self.settings
        if self.schema is not None and self._migrations is not None:
            # Without migrate-on-start the `migrate` job creates the database; /readyz waits for it.
            if s.migrate_on_start:
                await ensure_database(s.database_url)
            self._pool = await create_pool(s.database_url, s.db_pool_min, s.db_pool_max)
            if s.migrate_on_start:
                await migrate(self._pool, self.schema, self._migrations)
        self._amqp = await aio_pika.connect_robust(
            s.amqp_url, client_properties={"connection_name": f"lapse-{self.name}-publisher"}
        )
        await self._declare_topology()
        self._publisher = ConfirmingPublisher(self.channel, user_id=amqp_username(s.amqp_url))
        if self._pool is not None and self.schema is not None:
            self._relay = OutboxRelay(
                self._pool, s.database_url, self.schema, self._publisher, s.outbox_poll_seconds
            )
            self.spawn(self._relay.run)
        await self.broker.start()
        log.info("service started", queues=self._queues)

    async def _declare_topology(self, attempts: int = 6) -> None:
        """Exchanges, dead-letter queues and the service's own topology (the delay cascade).

        Retried on a fresh channel when the broker refuses a declaration for a moment: services
        starting together declare the same quorum queues, and RabbitMQ answers a declaration that
        races a queue's creation with NOT_FOUND "home node ... is down or inaccessible" (closing
        the channel) until that queue's Raft cluster is up.
        """
        assert self._amqp is not None
        for attempt in range(1, attempts + 1):
            self._channel = await self._amqp.channel(publisher_confirms=True)
            try:
                await declare_exchanges(self.channel)
                for queue in self._queues:
                    await declare_dead_letter_queue(self.channel, queue)
                if self._topology is not None:
                    await self._topology(self.channel)
                return
            except (aio_pika.exceptions.ChannelNotFoundEntity, aio_pika.exceptions.ChannelClosed) as exc:
                if attempt == attempts:
                    raise
                log.warning("topology declaration refused; retrying", attempt=attempt, error=str(exc))
                with contextlib.suppress(Exception):
                    await self._channel.close()
                await asyncio.sleep(0.5 * attempt)

    async def _report_rejection(self, event: SecurityMessageRejected) -> None:
        """Straight to the broker with a confirm, not through the outbox: the policy service has
        no database, and a report must not wait on one. Rate-limited by `RejectionLog`."""
        if self._publisher is not None:
            await self._publisher.publish(event, exchange=EVENTS)

    def spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a background job for the life of the service; a crash is logged, not swallowed."""

        async def guarded() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job crashed", job=getattr(job, "__qualname__", str(job)))
                raise

        self._tasks.append(asyncio.create_task(guarded()))

    async def stop(self) -> None:
        await self.broker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._relay is not None:
            await self._relay.close()
        if self._amqp is not None:
            await self._amqp.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("service stopped")

    async def readiness(self) -> dict[str, str]:
        """What this replica needs to do its work: "ok" per dependency, or what is wrong with it."""
        checks: dict[str, str] = {}
        checks["broker"] = "ok" if self._amqp is not None and not self._amqp.is_closed else "down"
        if self._pool is not None and self.schema is not None and self._migrations is not None:
            try:
                async with self._pool.acquire(timeout=2) as conn:
                    pending = await pending_versions(conn, self.schema, self._migrations)
                checks["database"] = "ok"
                checks["migrations"] = "ok" if not pending else "pending: " + ", ".join(pending)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                checks["database"] = "down"
                checks["migrations"] = "unknown"
        return checks

    async def _refresh_outbox_metrics(self) -> None:
        if self._pool is None:
            return
        async with self._pool.acquire(timeout=2) as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS backlog,"
                " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age"
                f' FROM "{self.schema}".outbox WHERE sent_at IS NULL'
            )
        assert row is not None
        self.metrics.outbox_backlog.set(row["backlog"])
        self.metrics.outbox_oldest_age.set(row["age"])


class TraceContextMiddleware:
    """Every HTTP request runs in a span: the caller's `traceparent` continued, or a new trace.

    Also gives each request an id (the caller's `X-Request-ID`, or a new one) for the logs, and
    returns both so a caller can quote them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        span = tracing.continue_or_start(headers.get(tracing.HEADER))
        request_id = headers.get("x-request-id", "")[:128] or str(uuid.uuid4())

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"traceparent", span.encode()),
                    (b"x-request-id", request_id.encode("latin-1", "replace")),
                ]
            await send(message)

        with tracing.span(span), structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_ids)


def create_app(host: ServiceHost, *, title: str, description: str, version: str = "0.1.0") -> FastAPI:
    """The FastAPI app of a service: the host starts and stops with it; problems and health built in."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await host.start()
        try:
            yield
        finally:
            await host.stop()

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    install_problem_handlers(app)
    app.add_middleware(TraceContextMiddleware)
    operations = APIRouter(tags=["operations"])

    @operations.get("/healthz", summary="Liveness: the process answers (no dependencies checked).")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @operations.get(
        "/readyz",
        summary="Readiness: broker connected, database answering, migrations applied (no token).",
        responses={503: {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "Not ready; says why."}},
    )
    async def readyz() -> JSONResponse:
        checks = await host.readiness()
        failing = {k: v for k, v in checks.items() if v != "ok"}
        if not failing:
            return JSONResponse({"status": "ok", "checks": checks})
        detail = "; ".join(f"{k}: {v}" for k, v in failing.items())
        return JSONResponse(
            {
                "type": PROBLEM_BASE + "not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": f"{host.name} is not ready: {detail}",
                "checks": checks,
            },
            503,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    @operations.get(
        "/metrics",
        summary="Prometheus metrics (messages, handler latency, outbox, and the service's own).",
        response_class=Response,
        responses={
            401: PROBLEM_RESPONSES[401],
            403: PROBLEM_RESPONSES[401] | {"description": "Not a monitor."},
        },
    )
    async def metrics(identity: CurrentIdentity, request: Request) -> Response:
        groups = set(host.settings.metrics_groups)
        if not identity.in_any(groups):
            raise ProblemError(
                403,
                "forbidden",
                "Forbidden",
                f"Reading metrics needs membership in one of: {sorted(groups)}.",
            )
        return Response(await host.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(operations)
    app.state.host = host
    return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app under uvicorn, keeping our logging configuration."""
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


async def migrate_only(settings: ServiceSettings, schema: str, migrations: str) -> list[str]:
    """Create the database if needed and apply pending migrations (the advisory lock serialises runs)."""
    await ensure_database(settings.database_url)
    pool = await create_pool(settings.database_url, 1, 1)
    try:
        return await migrate(pool, schema, migrations)
    finally:
        await pool.close()


def run_command(
    name: str,
    serve_service: Callable[[], None],
    *,
    schema: str | None = None,
    migrations: str | None = None,
    argv: list[str] | None = None,
) -> None:
    """`lapse-<name> [serve]` runs the service; `lapse-<name> migrate` applies migrations and exits."""
    parser = argparse.ArgumentParser(prog=f"lapse-{name}", description=f"The Lapse {name} service.")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve (default): run the service; migrate: apply database migrations, then exit.",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        serve_service()
        return
    if schema is None or migrations is None:
        configure_logging(name)
        log.info("nothing to migrate: this service has no database", service=name)
        return
    # Only the shared settings: migrating must not need the service's other configuration.
    settings = ServiceSettings()
    configure_logging(name, settings.log_level, settings.log_json)
    applied = asyncio.run(migrate_only(settings, schema, migrations))
    log.info("migrations done", service=name, schema=schema, applied=applied)
