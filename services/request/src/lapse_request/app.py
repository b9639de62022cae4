"""Composition root of the request service: settings -> pool -> broker -> app."""

from __future__ import annotations

import time

from fastapi import FastAPI

from lapse_request import api, consumers, whoami
from lapse_request.config import RequestSettings
from lapse_request.handlers import RequestHandlers, WorkflowRules
from lapse_request.repository import SCHEMA
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.http.authenticators import build_authenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, run_command, serve

NAME = "request"


class RequestHost(ServiceHost):
    """The service host plus the sweeper that expires overdue pending requests."""

    def __init__(self, settings: RequestSettings) -> None:
        broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
        super().__init__(
            NAME,
            settings,
            broker,
            schema=SCHEMA,
            migrations="lapse_request.migrations",
            queues=consumers.QUEUES,
        )
        self.request_settings = settings
        catalogue = CatalogueSource(settings.policy_dir)
        catalogue.current(time.monotonic())
        rules = WorkflowRules(
            pending_ttl=settings.pending_ttl,
            max_schedule_ahead=settings.max_schedule_ahead,
        )
        self.handlers = RequestHandlers(lambda: self.pool, catalogue, rules=rules)
        consumers.register(broker, self.handlers, settings.delivery_limit)

    async def start(self) -> None:
        await super().start()
        self.spawn(lambda: self.handlers.run_sweeper(self.request_settings.sweep_interval_seconds))


def build(settings: RequestSettings) -> FastAPI:
    host = RequestHost(settings)
    app = create_app(
        host,
        title="Lapse request API",
        description="Submit just-in-time access requests, review them, and follow them until the access"
        " lapses.",
    )
    app.include_router(api.router)
    app.include_router(whoami.router)
    app.state.handlers = host.handlers
    app.state.authenticator = build_authenticator(settings)
    app.state.reader_groups = set(settings.reader_groups)
    app.state.raw_body_schemas = consumers.RAW_BODY_SCHEMAS
    return app


def main() -> None:
    run_command(NAME, _serve, schema=SCHEMA, migrations="lapse_request.migrations")


def _serve() -> None:
    settings = RequestSettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
