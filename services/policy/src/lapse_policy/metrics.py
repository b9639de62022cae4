"""Prometheus metrics of the policy service, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

# Deciding is pure computation over loaded files: microseconds normally, milliseconds when large.
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class PolicyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decision_seconds = Histogram(
            "lapse_policy_decision_duration_seconds",
            "Time to decide one submitted request (policy evaluation only, not publishing).",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
