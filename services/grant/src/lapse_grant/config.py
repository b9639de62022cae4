"""Settings of the grant service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from lapse_shared.durations import Duration
from lapse_shared.messaging.auth import Producers
from lapse_shared.settings import ServiceSettings


class GrantSettings(ServiceSettings):
    # The policy directory: the resource catalogue says which provider and target serve a
    # resource. Target secrets are `${VAR}` references resolved from this service's environment.
    policy_dir: Path = Path("examples/policies")
    # Who may use the kill switch.
    admin_groups: list[str] = ["lapse-admins", "security"]
    # Fernet key (`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)
    # sealing ephemeral credentials until the requester fetches them; needed by postgres-login.
    credentials_key: SecretStr | None = None
    # The retrier's longest sleep: it also wakes for the soonest scheduled retry.
    sweep_interval_seconds: float = 5.0
    # How far past expires_at a grant must be before the retrier takes it: leaves the delayed
    # message its chance, so the retrier only acts when that message was lost or failed.
    sweep_grace_seconds: float = 5.0
    # How far ahead a scheduled start may be. The request service refuses more on submit; this
    # service checks every approval itself (approval_check.py), since an approval on the wire may
    # be forged: keep it equal to the request service's LAPSE_MAX_SCHEDULE_AHEAD (the same name).
    max_schedule_ahead: Duration = timedelta(days=30)
    # Transient target errors are retried with backoff for this long, then the request fails.
    provision_timeout_seconds: float = 300.0
    # Failed revocation attempts before `grant.revoke_failing` is published (retries go on).
    revoke_alert_after: int = 5
    # An expiry message arriving this early (or less) is held until due; earlier is rescheduled.
    # Messages are routed to arrive up to 2 s early (1 s lead + the whole-second rounding).
    expire_hold_seconds: float = 3.0
    # Expiry messages held at once: each waits out its sub-second rest, so a burst of expiries
    # needs many in flight (they hold no connection while waiting).
    expire_prefetch: int = 1024
    # Grants revoked or provisioned at once by the kill switch and the retrier.
    concurrency: int = 16
    # Drift reconciliation: how often, and how far back ended grants are checked. Each pass
    # verifies every active grant in its target, so keep it minutes apart.
    reconcile_interval_seconds: float = 300.0
    drift_lookback_hours: float = 24.0 * 7
    # AMQP users (the `user_id` RabbitMQ checks on each message) whose grant.revoke commands are
    # obeyed besides the request service's own broker user (it publishes releases and break-glass
    # denials from its outbox, so it is always trusted): a revoke from anyone else is dead-lettered.
    command_principals: list[str] = []
    # The grant API's port (kill switch, credentials, health, metrics).
    http_port: int = 8082

    def trusted_principals(self) -> frozenset[str]:
        request_user = self.broker_users.get("request")
        return frozenset(self.command_principals) | (
            frozenset([request_user]) if request_user else frozenset()
        )

    def producers(self) -> Producers:
        return Producers(broker_users=self.broker_users, command_principals=self.trusted_principals())
