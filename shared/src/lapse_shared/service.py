"""What every service runs beside its own logic: database, broker, outbox relay, health, serving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import structlog
import uvicorn
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from faststream.rabbit import RabbitBroker

from lapse_shared.db.migrations import migrate
from lapse_shared.db.outbox import OutboxRelay
from lapse_shared.db.pool import create_pool, ensure_database
from lapse_shared.http.problems import install_problem_handlers
from lapse_shared.messaging.publisher import ConfirmingPublisher, amqp_username
from lapse_shared.messaging.topology import declare_dead_letter_queue, declare_exchanges
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
            await ensure_database(s.database_url)
            self._pool = await create_pool(s.database_url, s.db_pool_min, s.db_pool_max)
            await migrate(self._pool, self.schema, self._migrations)
        self._amqp = await aio_pika.connect_robust(
            s.amqp_url, client_properties={"connection_name": f"lapse-{self.name}-publisher"}
        )
        self._channel = await self._amqp.channel(publisher_confirms=True)
        await declare_exchanges(self.channel)
        for queue in self._queues:
            await declare_dead_letter_queue(self.channel, queue)
        if self._topology is not None:
            await self._topology(self.channel)
        self._publisher = ConfirmingPublisher(self.channel, user_id=amqp_username(s.amqp_url))
        if self._pool is not None and self.schema is not None:
            self._relay = OutboxRelay(
                self._pool, s.database_url, self.schema, self._publisher, s.outbox_poll_seconds
            )
            self.spawn(self._relay.run)
        await self.broker.start()
        log.info("service started", queues=self._queues)

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

    async def health(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        checks["broker"] = "ok" if self._amqp is not None and not self._amqp.is_closed else "down"
        if self._pool is not None:
            try:
                async with self._pool.acquire(timeout=2) as conn:
                    await conn.fetchval("SELECT 1")
                checks["database"] = "ok"
            except (OSError, asyncpg.PostgresError, TimeoutError):
                checks["database"] = "down"
        return checks


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
    health = APIRouter(tags=["operations"])

    @health.get("/healthz", summary="Liveness and dependency check (no token: it reveals nothing).")
    async def healthz() -> JSONResponse:
        checks = await host.health()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503)

    app.include_router(health)
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
