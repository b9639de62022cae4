"""Prometheus metrics every service exports, on a registry per service (no global state).

Messages handled/failed and handler latency per queue come from the consumer middleware; the
outbox gauges and any service gauge that needs the database are computed at scrape time by
refreshers, so a replica that publishes nothing still reports the shared backlog truthfully.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger("lapse.metrics")

# Handlers run from a millisecond (inbox hit) to seconds (a slow target).
HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Refresher = Callable[[], Awaitable[None]]


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.handled = Counter(
            "lapse_messages_handled_total",
            "Messages a handler completed (acked), by queue.",
            ["queue"],
            registry=self.registry,
        )
        self.failed = Counter(
            "lapse_messages_failed_total",
            "Messages whose handler raised (requeued, or dead-lettered when poison), by queue.",
            ["queue"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "lapse_handler_duration_seconds",
            "Time a handler took for one message, by queue.",
            ["queue"],
            buckets=HANDLER_BUCKETS,
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "lapse_outbox_backlog",
            "Outbox rows not yet published (this service's schema, all replicas).",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "lapse_outbox_oldest_unsent_age_seconds",
            "Age of the oldest unpublished outbox row; 0 when the outbox is drained.",
            registry=self.registry,
        )
        # Registries of a service's own metrics (grant, notifier), exported alongside.
        self.extra_registries: list[CollectorRegistry] = []
        self._refreshers: list[Refresher] = []

    def observe(self, queue: str, seconds: float, *, ok: bool) -> None:
        self.handler_seconds.labels(queue).observe(seconds)
        (self.handled if ok else self.failed).labels(queue).inc()

    def start_at_zero(self, queues: list[str]) -> None:
        """Export zeros per queue at start, so rate() and alerts see a queue before its first message."""
        for queue in queues:
            self.handled.labels(queue)
            self.failed.labels(queue)

    def add_refresher(self, refresher: Refresher) -> None:
        self._refreshers.append(refresher)

    async def render(self) -> bytes:
        """The exposition text: refresh the scrape-time gauges, then every registry."""
        for refresher in self._refreshers:
            try:
                await refresher()
            except Exception as exc:  # noqa: BLE001 - a stale gauge beats a failed scrape
                log.warning("metrics refresh failed", error=str(exc))
        return b"".join(generate_latest(r) for r in [self.registry, *self.extra_registries])
