"""Prometheus metrics of the notifier, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

FAILURE_REASONS = ("rejected", "max_attempts", "max_age", "unrenderable")
# From "in the channel at once" to "an approver saw it an hour late".
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class NotifierMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recorded = Counter(
            "lapse_notifier_notices_recorded_total",
            "Notices recorded for delivery, by webhook and event type (one per event and webhook).",
            ["webhook", "event_type"],
            registry=self.registry,
        )
        self.sent = Counter(
            "lapse_notifier_deliveries_sent_total",
            "Notices the webhook accepted (2xx).",
            ["webhook"],
            registry=self.registry,
        )
        self.failed = Counter(
            "lapse_notifier_deliveries_failed_total",
            "Notices given up on, by reason: rejected (a 4xx that retrying cannot fix),"
            " max_attempts, max_age, unrenderable.",
            ["webhook", "reason"],
            registry=self.registry,
        )
        self.attempt_errors = Counter(
            "lapse_notifier_attempt_errors_total",
            "Failed attempts (timeouts, connection errors, non-2xx), retried or not.",
            ["webhook"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lapse_notifier_delivery_latency_seconds",
            "From the event's time to the webhook's 2xx answer.",
            ["webhook"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def start_at_zero(self, webhook: str) -> None:
        """Export zeros for a webhook at start, so rate() and alerts see it before its first failure."""
        self.sent.labels(webhook)
        self.attempt_errors.labels(webhook)
        for reason in FAILURE_REASONS:
            self.failed.labels(webhook, reason)
