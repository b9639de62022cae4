"""Composition root of the notifier: settings -> webhook file -> pool -> broker -> dispatchers -> app."""

from __future__ import annotations

import asyncio
import logging
import sys

import httpx
import structlog
from fastapi import FastAPI
from pydantic import ValidationError

from lapse_request.notifier import consumers, repository
from lapse_request.notifier.config import NotifierSettings
from lapse_request.notifier.dispatcher import RetryPolicy, WebhookDispatcher
from lapse_request.notifier.metrics import NotifierMetrics
from lapse_request.notifier.webhooks import ConfigError, Webhook, load_webhooks
from lapse_shared.http.authenticators import build_authenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, run_command, serve

NAME = "notifier"
HOUSEKEEPING_SECONDS = 600.0

log = structlog.get_logger("lapse.notifier")


class NotifierHost(ServiceHost):
    """The service host plus one dispatcher per webhook and the housekeeping of old rows."""

    def __init__(self, settings: NotifierSettings, webhooks: list[Webhook]) -> None:
        broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
        super().__init__(
            NAME,
            settings,
            broker,
            schema=repository.SCHEMA,
            migrations="lapse_request.notifier.migrations",
            queues=consumers.QUEUES,
            topology=lambda channel: consumers.bind_event_types(channel, settings.delivery_limit),
        )
        self.notifier_settings = settings
        self.webhooks = webhooks
        self.notifier_metrics = NotifierMetrics()
        self.metrics.extra_registries.append(self.notifier_metrics.registry)
        self.policy = RetryPolicy(
            max_attempts=settings.notifier_max_attempts,
            max_age_seconds=settings.notifier_max_age_seconds,
            backoff_seconds=settings.notifier_backoff_seconds,
            backoff_max_seconds=settings.notifier_backoff_max_seconds,
        )
        self.dispatchers: dict[str, WebhookDispatcher] = {}
        self._client: httpx.AsyncClient | None = None
        consumers.register(
            broker, lambda: self.pool, webhooks, self.wake, self.notifier_metrics, settings.delivery_limit
        )

    def wake(self, names: list[str]) -> None:
        for name in names:
            dispatcher = self.dispatchers.get(name)
            if dispatcher is not None:
                dispatcher.wake()

    async def start(self) -> None:
        await super().start()
        s = self.notifier_settings
        # No redirects: a webhook URL that moved is a configuration error to see, not to follow.
        self._client = httpx.AsyncClient(follow_redirects=False)
        for webhook in self.webhooks:
            dispatcher = WebhookDispatcher(
                webhook,
                self.pool,
                self._client,
                self.notifier_metrics,
                self.policy,
                concurrency=s.notifier_concurrency,
                poll_seconds=s.notifier_poll_seconds,
            )
            self.dispatchers[webhook.name] = dispatcher
            self.notifier_metrics.start_at_zero(webhook.name)
            self.spawn(dispatcher.run)
        self.spawn(self._housekeeping)
        log.info("notifier started", webhooks=[repr(w) for w in self.webhooks])

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.aclose()

    async def _housekeeping(self) -> None:
        s = self.notifier_settings
        names = [w.name for w in self.webhooks]
        while True:
            try:
                orphans = await repository.fail_orphans(self.pool, names, s.notifier_max_age_seconds)
                if orphans:
                    log.warning("notices of webhooks no longer configured ended as failed", count=orphans)
                await repository.purge_finished(self.pool, s.notifier_retention_days)
            except Exception as exc:  # noqa: BLE001 - retried at the next round
                log.warning("notifier housekeeping failed", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_SECONDS)


def build(settings: NotifierSettings) -> FastAPI:
    """Raises ConfigError when the webhook file is missing or wrong."""
    # httpx logs every request with its full URL at INFO: that URL is the Slack/Teams secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    webhooks = load_webhooks(settings.notifier_config)
    host = NotifierHost(settings, webhooks)
    app = create_app(
        host,
        title="Lapse notifier",
        description="Tells approvers' channels (Slack, Teams, JSON webhooks) about reviews and decisions.",
    )
    app.state.metrics = host.notifier_metrics
    app.state.authenticator = build_authenticator(settings)
    return app


def main() -> None:
    run_command(NAME, _serve, schema=repository.SCHEMA, migrations="lapse_request.notifier.migrations")


def _serve() -> None:
    try:
        settings = NotifierSettings()
    except ValidationError as exc:
        missing = any(e["type"] == "missing" and e["loc"] == ("notifier_config",) for e in exc.errors())
        if missing:
            sys.exit(
                "LAPSE_NOTIFIER_CONFIG is not set: point it at the webhook file (see examples/notifier.yaml)"
            )
        raise
    configure_logging(NAME, settings.log_level, settings.log_json)
    try:
        app = build(settings)
    except ConfigError as exc:
        sys.exit(f"notifier configuration: {exc}")
    serve(app, settings)
