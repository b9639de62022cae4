"""Composition root of the request service: settings -> pool -> broker -> app."""

from __future__ import annotations

import time

from fastapi import FastAPI

from lapse_request import api, consumers
from lapse_request.config import RequestSettings
from lapse_request.handlers import RequestHandlers
from lapse_request.repository import SCHEMA
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.http.authenticators import build_authenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, serve

NAME = "request"


def build(settings: RequestSettings) -> FastAPI:
    broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
    host = ServiceHost(
        NAME, settings, broker, schema=SCHEMA, migrations="lapse_request.migrations", queues=consumers.QUEUES
    )
    catalogue = CatalogueSource(settings.policy_dir)
    catalogue.current(time.monotonic())
    handlers = RequestHandlers(lambda: host.pool, catalogue)
    consumers.register(broker, handlers, settings.delivery_limit)
    app = create_app(
        host,
        title="Lapse request API",
        description="Submit just-in-time access requests and follow them until the access lapses.",
    )
    app.include_router(api.router)
    app.state.handlers = handlers
    app.state.authenticator = build_authenticator(settings)
    app.state.reader_groups = set(settings.reader_groups)
    return app


def main() -> None:
    settings = RequestSettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
