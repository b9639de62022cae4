"""Composition root of the grant service."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi import FastAPI

from lapse_grant import api, consumers
from lapse_grant.config import GrantSettings
from lapse_grant.credentials import CredentialVault
from lapse_grant.handlers import GrantHandlers, Limits, Timings
from lapse_grant.providers import load_providers, parse_settings
from lapse_grant.repository import SCHEMA
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.http.authenticators import build_authenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, run_command, serve

NAME = "grant"


class GrantHost(ServiceHost):
    """The service host plus the retrier, the reconciler and provider connections."""

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
        self._check_targets(catalogue)
        key = settings.credentials_key
        self.handlers = GrantHandlers(
            lambda: self.pool,
            catalogue,
            self.providers,
            timings=Timings(
                provision_timeout=timedelta(seconds=settings.provision_timeout_seconds),
                revoke_alert_after=settings.revoke_alert_after,
                expire_hold_seconds=settings.expire_hold_seconds,
                sweep_grace_seconds=settings.sweep_grace_seconds,
                concurrency=settings.concurrency,
            ),
            vault=CredentialVault(key.get_secret_value()) if key else None,
            limits=Limits(max_schedule_ahead=settings.max_schedule_ahead),
        )
        self.metrics.extra_registries.append(self.handlers.metrics.registry)
        self.metrics.add_refresher(self._count_active_grants)
        consumers.register(
            broker,
            self.handlers,
            settings.delivery_limit,
            settings.expire_prefetch,
        )

    def _check_targets(self, catalogue: CatalogueSource) -> None:
        """Refuse to start on a catalogue this service cannot serve, naming the resource."""
        for resource in catalogue.current(time.monotonic()).resources.values():
            provider = self.providers.get(resource.provider)
            if provider is None:
                raise SystemExit(
                    f"resource '{resource.name}': no provider '{resource.provider}' is installed"
                    f" (installed: {', '.join(sorted(self.providers))})"
                )
            try:
                parse_settings(provider.settings_model, resource.provider, resource.target)
            except Exception as exc:  # noqa: BLE001 - reported with the resource named
                raise SystemExit(f"resource '{resource.name}': {exc}") from None

    async def _count_active_grants(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            count = await conn.fetchval(f"SELECT count(*) FROM \"{SCHEMA}\".grants WHERE state = 'active'")
        self.handlers.metrics.active_grants.set(count)

    async def start(self) -> None:
        await super().start()
        s = self.grant_settings
        self.spawn(lambda: self.handlers.run_retrier(s.sweep_interval_seconds))
        self.spawn(
            lambda: self.handlers.run_reconciler(s.reconcile_interval_seconds, s.drift_lookback_hours * 3600)
        )

    async def stop(self) -> None:
        await super().stop()
        for provider in self.providers.values():
            await provider.close()


def build(settings: GrantSettings) -> FastAPI:
    host = GrantHost(settings)
    app = create_app(
        host,
        title="Lapse grant service",
        description="Provisions access in targets and revokes it when it lapses.",
    )
    app.include_router(api.router)
    app.state.handlers = host.handlers
    app.state.authenticator = build_authenticator(settings)
    app.state.admin_groups = set(settings.admin_groups)
    return app


def main() -> None:
    run_command(NAME, _serve, schema=SCHEMA, migrations="lapse_grant.migrations")


def _serve() -> None:
    settings = GrantSettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
