"""Composition root of the audit service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aio_pika.abc import AbstractChannel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from lapse_audit import api
from lapse_audit.checkpoints import CheckpointSigner, load_private_key, public_key_b64
from lapse_audit.config import AuditSettings
from lapse_audit.handlers import AuditHandlers
from lapse_audit.ingest import EVENTS_QUEUE, Authentication, BatchIngest
from lapse_audit.repository import SCHEMA
from lapse_audit.siem import SIEM_EXCHANGE, declare_stream
from lapse_audit.siem_relay import SiemRelay
from lapse_shared.events import AuditCheckpoint
from lapse_shared.http.authenticators import build_authenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker, document_publishers, topic_exchange
from lapse_shared.service import ServiceHost, create_app, run_command, serve

NAME = "audit"
QUEUES = [EVENTS_QUEUE]
log = structlog.get_logger("lapse.audit")


def load_signer(settings: AuditSettings) -> CheckpointSigner:
    if settings.checkpoint_key is not None and settings.checkpoint_key.get_secret_value().strip():
        return CheckpointSigner(load_private_key(settings.checkpoint_key.get_secret_value()))
    if settings.checkpoint_key_file is not None:
        return CheckpointSigner(load_private_key(settings.checkpoint_key_file.read_text()))
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    log.warning(
        "no checkpoint signing key configured: using a throw-away key; set LAPSE_CHECKPOINT_KEY_FILE",
        key_id=signer.key_id,
    )
    return signer


def build(settings: AuditSettings) -> FastAPI:
    broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
    host = ServiceHost(
        NAME,
        settings,
        broker,
        schema=SCHEMA,
        migrations="lapse_audit.migrations",
        queues=QUEUES,
        topology=functools.partial(_declare_siem, settings=settings),
    )
    signer = load_signer(settings)
    handlers = AuditHandlers(lambda: host.pool, signer=signer)
    ingest = BatchIngest(
        settings.amqp_url,
        handlers.record_batch,
        delivery_limit=settings.delivery_limit,
        prefetch=settings.ingest_prefetch,
        batch_max=settings.ingest_batch_max,
        batch_wait_seconds=settings.ingest_batch_wait_seconds,
        metrics=host.metrics,
        auth=Authentication(settings.producers(), host.rejections),
    )
    document_publishers(broker, [AuditCheckpoint])
    broker.publisher(
        exchange=topic_exchange(SIEM_EXCHANGE),
        routing_key="ocsf.#",
        title=f"{SIEM_EXCHANGE}/ocsf",
        description=(
            f"Every audit entry as an OCSF 1.7.0 record, in chain order, JSON lines of up to"
            f" {settings.siem_records_per_message} records a message, into the stream queue"
            f" `{settings.siem_stream}` (x-queue-type: stream). See docs/siem/README.md."
        ),
    )
    app = create_app(
        host, title="Lapse audit API", description="The tamper-evident audit trail of every access request."
    )
    app.include_router(api.router)
    app.state.handlers = handlers
    app.state.authenticator = build_authenticator(settings)
    app.state.auditor_groups = set(settings.auditor_groups)
    _run_with_host(app, host, ingest, handlers, settings)
    return app


async def _declare_siem(channel: AbstractChannel, settings: AuditSettings) -> None:
    await declare_stream(
        channel,
        settings.siem_stream,
        settings.siem_max_age,
        settings.siem_max_length_bytes,
        settings.siem_segment_bytes,
    )


def _run_with_host(
    app: FastAPI, host: ServiceHost, ingest: BatchIngest, handlers: AuditHandlers, settings: AuditSettings
) -> None:
    """Consume, relay and sign while the host runs: started after it (the pool exists), stopped before."""
    host_lifespan = app.router.lifespan_context
    interval = settings.checkpoint_interval_seconds

    async def sign_periodically() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await handlers.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the next period tries again
                log.warning("checkpoint failed; retrying next period", error=str(exc))

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with host_lifespan(application):
            assert handlers.signer is not None
            log.info(
                "checkpoints signed with",
                key_id=handlers.signer.key_id,
                public_key=public_key_b64(handlers.signer.public_key),
            )
            relay = SiemRelay(
                host.pool,
                settings.database_url,
                settings.amqp_url,
                SIEM_EXCHANGE,
                settings.siem_stream,
                poll_seconds=settings.outbox_poll_seconds,
                records_per_message=settings.siem_records_per_message,
            )
            await ingest.start()
            host.spawn(relay.run)
            host.spawn(sign_periodically)
            try:
                yield
            finally:
                await ingest.stop()
                with contextlib.suppress(Exception):
                    await handlers.checkpoint()  # sign the final head on a clean stop

    app.router.lifespan_context = lifespan


def main() -> None:
    run_command(NAME, _serve, schema=SCHEMA, migrations="lapse_audit.migrations")


def _serve() -> None:
    settings = AuditSettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
