"""Settings every service shares; each service extends this with its own fields."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lapse_shared.messaging.auth import DEFAULT_BROKER_USERS, Producers


class ServiceSettings(BaseSettings):
    """Read from LAPSE_* environment variables; defaults suit the local quickstart."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_", extra="ignore")

    # The broker: vhost in the URL path, so a deployment (or a test run) is isolated by vhost.
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/")
    # Each Lapse service's own broker user (JSON: service -> AMQP user name; `python -m
    # lapse_shared.messaging.broker_setup` creates them). A consumer accepts an event or command
    # type only from the user of the service that produces it (RabbitMQ validates the AMQP
    # `user_id`): request.* from `request`, policy.decided from `policy`, grant.* from `grant`.
    # Anything else is refused. Every service must be given the same map.
    broker_users: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_BROKER_USERS))
    # A refused message is counted and logged every time, but reported to the audit trail (a
    # `security.message_rejected` entry with the count suppressed meanwhile) at most once per
    # (principal, type) in this many seconds, so a flood cannot grow the audit chain without bound.
    security_report_interval_seconds: float = 600.0
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
    # Apply this service's migrations at start (guarded by an advisory lock). Set false where a
    # `lapse-<service> migrate` job runs them first; /readyz reports pending ones meanwhile.
    migrate_on_start: bool = True
    # Who may read /metrics (give Prometheus a token in one of these groups).
    metrics_groups: list[str] = ["monitoring", "lapse-admins"]
    # Log level of the service's loggers (DEBUG, INFO, WARNING, ERROR).
    log_level: str = "INFO"
    # JSON logs for machines; None means "JSON unless stderr is a terminal".
    log_json: bool | None = None

    # Who HTTP callers are. OIDC (production): the issuer is the IdP's `iss`, exactly as in its
    # tokens; the audience is this deployment's client/API id, which tokens must name in `aud`.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    # Where the IdP's signing keys are; unset: discovered from the issuer's openid-configuration.
    oidc_jwks_url: str | None = None
    # The claim naming the caller, and the claim holding their groups (a list or a
    # space-separated string; a dotted path such as `realm_access.roles` reaches nested claims).
    oidc_subject_claim: str = "sub"
    oidc_groups_claim: str = "groups"
    # Identity attributes policies may test, from claims: JSON, e.g. {"department": "dept"}.
    oidc_attribute_claims: dict[str, str] = Field(default_factory=dict)
    # Clock skew tolerated on exp / nbf / iat.
    oidc_leeway_seconds: float = 30.0
    # The key set is refetched after this long, or sooner for an unknown key id (rotation),
    # but never more than once per oidc_jwks_min_refresh_seconds.
    oidc_jwks_cache_seconds: float = 600.0
    oidc_jwks_min_refresh_seconds: float = 30.0
    # Static bearer tokens (YAML: token -> subject, groups) for local use and tests; off unless set.
    # With OIDC as well, a token that parses as a JWT goes to OIDC and any other to this file.
    token_file: Path | None = None

    def producers(self) -> Producers:
        """Who may produce each message type; services that take commands add their principals."""
        return Producers(broker_users=self.broker_users)
