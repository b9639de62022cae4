"""Composition root of the audit service."""

from __future__ import annotations

from fastapi import FastAPI

from lapse_audit import api, consumers
from lapse_audit.config import AuditSettings
from lapse_audit.handlers import AuditHandlers
from lapse_audit.repository import SCHEMA
from lapse_shared.http.identity import StaticTokenAuthenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, serve

NAME = "audit"


def build(settings: AuditSettings) -> FastAPI:
    broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
    host = ServiceHost(
        NAME, settings, broker, schema=SCHEMA, migrations="lapse_audit.migrations", queues=consumers.QUEUES
    )
    handlers = AuditHandlers(lambda: host.pool)
    consumers.register(broker, handlers, settings.delivery_limit)
    app = create_app(
        host, title="Lapse audit API", description="The tamper-evident audit trail of every access request."
    )
    app.include_router(api.router)
    app.state.handlers = handlers
    app.state.authenticator = StaticTokenAuthenticator.from_file(settings.token_file)
    app.state.auditor_groups = set(settings.auditor_groups)
    return app


def main() -> None:
    settings = AuditSettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
