"""Composition root of the grant service."""

from __future__ import annotations

import time

from fastapi import FastAPI

from lapse_grant import consumers
from lapse_grant.config import GrantSettings
from lapse_grant.handlers import GrantHandlers
from lapse_grant.providers import load_providers
from lapse_grant.repository import SCHEMA
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, serve

NAME = "grant"


class GrantHost(ServiceHost):
    """The service host plus the sweeper and provider connections."""

    def __init__(self, settings: GrantSettings) -> None:
        broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
        super().__init__(
            NAME,
            settings,
            broker,
            schema=SCHEMA,
            migrations="lapse_grant.migrations",
            queues=consumers.QUEUES,
        )
        self.grant_settings = settings
        self.providers = load_providers()
        catalogue = CatalogueSource(settings.policy_dir)
        catalogue.current(time.monotonic())
        self.handlers = GrantHandlers(
            lambda: self.pool,
            catalogue,
            self.providers,
            provision_attempts=settings.provision_attempts,
            expire_hold_seconds=settings.expire_hold_seconds,
        )
        consumers.register(broker, self.handlers, settings.delivery_limit)

    async def start(self) -> None:
        await super().start()
        s = self.grant_settings
        self.spawn(lambda: self.handlers.run_sweeper(s.sweep_interval_seconds, s.sweep_grace_seconds))

    async def stop(self) -> None:
        await super().stop()
        for provider in self.providers.values():
            await provider.close()


def build(settings: GrantSettings) -> FastAPI:
    host = GrantHost(settings)
    return create_app(
        host,
        title="Lapse grant service",
        description="Provisions access in targets and revokes it when it lapses.",
    )


def main() -> None:
    settings = GrantSettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
