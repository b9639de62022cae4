"""Composition root of the policy service."""

from __future__ import annotations

from fastapi import FastAPI

from lapse_policy import api, consumers
from lapse_policy.config import PolicySettings
from lapse_policy.engine import PolicySource
from lapse_policy.metrics import PolicyMetrics
from lapse_shared.http.authenticators import build_authenticator
from lapse_shared.logging import configure_logging
from lapse_shared.messaging.consumer import build_broker
from lapse_shared.service import ServiceHost, create_app, run_command, serve

NAME = "policy"


def build(settings: PolicySettings) -> FastAPI:
    broker = build_broker(settings.amqp_url, settings.prefetch, NAME)
    host = ServiceHost(NAME, settings, broker, queues=consumers.QUEUES)
    # Loaded now, so a broken policy directory stops the service at start with the error.
    policy = PolicySource(settings.policy_dir)
    metrics = PolicyMetrics()
    host.metrics.extra_registries.append(metrics.registry)
    consumers.register(broker, policy, lambda: host.publisher, settings.delivery_limit, metrics)
    app = create_app(
        host,
        title="Lapse policy service",
        description="Decides access requests from policy files; explains any request as a dry run.",
    )
    app.include_router(api.router)
    app.state.policy = policy
    app.state.authenticator = build_authenticator(settings)
    app.state.admin_groups = set(settings.admin_groups)
    return app


def main() -> None:
    run_command(NAME, _serve)


def _serve() -> None:
    settings = PolicySettings()
    configure_logging(NAME, settings.log_level, settings.log_json)
    serve(build(settings), settings)
