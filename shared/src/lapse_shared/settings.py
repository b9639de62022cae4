"""Settings every service shares; each service extends this with its own fields."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Read from LAPSE_* environment variables; defaults suit the local quickstart."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_", extra="ignore")

    # The broker: vhost in the URL path, so a deployment (or a test run) is isolated by vhost.
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/")
    # The service's own database; each service owns one schema in it.
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/lapse")
    # Connection pool bounds: small, since every service runs several replicas at scale.
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Consumer prefetch: bounds unacked messages held by one replica.
    prefetch: int = 32
    # How often the outbox relay polls when no NOTIFY arrived (the fallback path).
    outbox_poll_seconds: float = 1.0
    # Deliveries of one message before it is dead-lettered to <queue>.dlq.
    delivery_limit: int = 5
    # HTTP listener for the API, health and metrics.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: str = "INFO"
    # JSON logs for machines; None means "JSON unless stderr is a terminal".
    log_json: bool | None = None
