"""Settings of the notifier process (environment); the webhooks themselves are in a YAML file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from lapse_shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    # LAPSE_NOTIFIER_CONFIG: the YAML file listing the webhooks (see examples/notifier.yaml).
    # Required: a notifier that silently tells nobody is worse than one that refuses to start.
    notifier_config: Path
    # Attempts of one notice before it is marked failed (the first try included).
    notifier_max_attempts: int = Field(8, ge=1)
    # A notice not delivered this long after it was recorded is marked failed: an approval
    # request that arrives hours late helps nobody, and the request has its own pending TTL.
    notifier_max_age_seconds: float = Field(3600, gt=0)
    # Backoff before retry n is min(max, base * 2^(n-1)), drawn uniformly from its upper half
    # (jitter), so replicas and webhooks do not retry in lockstep after an outage.
    notifier_backoff_seconds: float = Field(2.0, gt=0)
    notifier_backoff_max_seconds: float = Field(300.0, gt=0)
    # Notices in flight at once per webhook; webhooks never wait on each other.
    notifier_concurrency: int = Field(4, ge=1)
    # How often each webhook's dispatcher looks for due notices when nothing woke it (notices
    # recorded by another replica, retries coming due).
    notifier_poll_seconds: float = Field(1.0, gt=0)
    # Finished (sent or failed) delivery rows are kept this long for investigation and for
    # routing decisions to the channel that was asked to review.
    notifier_retention_days: int = Field(30, ge=1)
    http_port: int = 8084
