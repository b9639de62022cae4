"""Prometheus metrics of the grant service, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From "on time" to "an incident": the promise is p99 under 250 ms and max under 1 s.
LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class GrantMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lateness = Histogram(
            "lapse_grant_revocation_lateness_seconds",
            "revoked_at - expires_at of revocations at the end of the window (expired or swept).",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.active_grants = Gauge(
            "lapse_grant_active_grants",
            "Grants active now, across all replicas (counted at scrape time).",
            registry=self.registry,
        )
        self.revocations = Counter(
            "lapse_grant_revocations_total", "Grants ended, by cause.", ["cause"], registry=self.registry
        )
        self.revoke_failures = Counter(
            "lapse_grant_revoke_failures_total",
            "Failed revocation attempts (each is retried until it works).",
            registry=self.registry,
        )
        self.activations = Counter(
            "lapse_grant_activations_total", "Grants provisioned and verified.", registry=self.registry
        )
        self.provision_failures = Counter(
            "lapse_grant_provision_failures_total",
            "Failed provisioning attempts, by kind (transient ones are retried).",
            ["kind"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "lapse_grant_refusals_total",
            "Approvals the grant service refused on its own check (approval_check.py): at the"
            " approval or right before the grant call.",
            ["stage"],
            registry=self.registry,
        )
        self.cleanups = Counter(
            "lapse_grant_cleanups_total",
            "Failed grants whose access was removed and verified absent (compensation.py).",
            registry=self.registry,
        )
        self.drift = Counter(
            "lapse_grant_drift_detected_total",
            "Differences found by reconciliation.",
            ["kind"],
            registry=self.registry,
        )
