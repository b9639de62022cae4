"""The Grant aggregate: the access provisioned for one approved request. Pure, no I/O.

provisioning -> active -> revoked
provisioning -> failed   (a permanent error, or transient ones past the deadline)
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from lapse_shared.events import (
    DriftKind,
    Event,
    GrantActivated,
    GrantActivatedData,
    GrantDriftDetected,
    GrantDriftDetectedData,
    GrantExpire,
    GrantExpireData,
    GrantFailed,
    GrantFailedData,
    GrantRevoked,
    GrantRevokedData,
    GrantRevokeFailing,
    GrantRevokeFailingData,
    RequestApprovedData,
    RevokeCause,
)

SOURCE = "lapse/grant"


class GrantState(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    REVOKED = "revoked"
    FAILED = "failed"


def backoff(
    attempt: int, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None
) -> timedelta:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].

    Jitter keeps many grants failing on one target from retrying in lockstep.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


@dataclass
class Grant:
    id: uuid.UUID
    request_id: uuid.UUID
    subject: str
    resource: str
    role: str
    provider: str
    state: GrantState
    duration_seconds: int
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    lateness_ms: int | None = None
    revoke_cause: str | None = None
    failure_reason: str | None = None
    provision_deadline: datetime | None = None
    provision_attempts: int = 0
    revoke_attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    access_retained: bool = False
    revoked_by: str | None = None
    revoke_reason: str | None = None
    target: dict[str, object] = field(default_factory=dict)

    @property
    def access_key(self) -> str:
        """Grants with the same key share one access in a shared-access target."""
        return f"{self.resource}\x1f{self.subject}\x1f{self.role}"

    @classmethod
    def for_approval(
        cls,
        data: RequestApprovedData,
        provider: str,
        target: dict[str, object],
        now: datetime,
        provision_timeout: timedelta,
    ) -> Grant:
        return cls(
            target=target,
            id=uuid.uuid4(),
            request_id=data.request_id,
            subject=data.requester,
            resource=data.resource,
            role=data.role,
            provider=provider,
            state=GrantState.PROVISIONING,
            duration_seconds=data.duration_seconds,
            provision_deadline=now + provision_timeout,
            next_attempt_at=now,
        )

    def activate(
        self, now: datetime, cause: Event | None = None, *, credentials: bool = False
    ) -> tuple[GrantActivated, GrantExpire]:
        """Access is verified present: the window starts now."""
        self.state = GrantState.ACTIVE
        self.granted_at = now
        self.expires_at = now + timedelta(seconds=self.duration_seconds)
        self.next_attempt_at, self.last_error = None, None
        activated = GrantActivated.create(
            source=SOURCE,
            request_id=self.request_id,
            cause=cause,
            data=GrantActivatedData(
                grant_id=self.id,
                request_id=self.request_id,
                subject=self.subject,
                resource=self.resource,
                role=self.role,
                granted_at=now,
                expires_at=self.expires_at,
                credentials_available=credentials,
            ),
        )
        return activated, self.expire_command(activated)

    def provisioning_failed(self, error: str, now: datetime, *, transient: bool) -> GrantFailed | None:
        """Record a failed attempt; the grant fails for good unless it is worth trying again."""
        self.provision_attempts += 1
        self.last_error = error
        if transient and self.provision_deadline is not None and now < self.provision_deadline:
            self.next_attempt_at = now + backoff(self.provision_attempts)
            return None
        return self.fail(error if not transient else f"target unavailable until the deadline: {error}")

    def expire_command(self, cause: Event | None = None) -> GrantExpire:
        assert self.expires_at is not None
        return GrantExpire.create(
            source=SOURCE,
            request_id=self.request_id,
            cause=cause,
            data=GrantExpireData(grant_id=self.id, expires_at=self.expires_at),
        )

    def fail(self, reason: str) -> GrantFailed:
        self.state = GrantState.FAILED
        self.failure_reason = reason
        self.next_attempt_at = None
        return GrantFailed.create(
            source=SOURCE,
            request_id=self.request_id,
            data=GrantFailedData(
                grant_id=self.id,
                request_id=self.request_id,
                resource=self.resource,
                role=self.role,
                reason=reason,
            ),
        )

    def revoke_failed(self, error: str, now: datetime, alert_after: int) -> GrantRevokeFailing | None:
        """Record a failed revocation and schedule the next try; alert once at the threshold."""
        assert self.expires_at is not None
        self.revoke_attempts += 1
        self.last_error = error
        self.next_attempt_at = now + backoff(self.revoke_attempts)
        if self.revoke_attempts != alert_after:
            return None
        return GrantRevokeFailing.create(
            source=SOURCE,
            request_id=self.request_id,
            data=GrantRevokeFailingData(
                grant_id=self.id,
                request_id=self.request_id,
                subject=self.subject,
                resource=self.resource,
                role=self.role,
                expires_at=self.expires_at,
                attempts=self.revoke_attempts,
                error=error,
            ),
        )

    def revoked(
        self,
        now: datetime,
        cause: RevokeCause,
        *,
        retained: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> GrantRevoked:
        """Access is verified gone (or kept by another grant); lateness is against the expiry."""
        assert self.expires_at is not None
        self.state = GrantState.REVOKED
        self.revoked_at = now
        self.lateness_ms = round((now - self.expires_at).total_seconds() * 1000)
        self.revoke_cause = cause.value
        self.access_retained = retained
        self.revoked_by, self.revoke_reason = actor, reason
        self.next_attempt_at = None
        return GrantRevoked.create(
            source=SOURCE,
            request_id=self.request_id,
            data=GrantRevokedData(
                grant_id=self.id,
                request_id=self.request_id,
                subject=self.subject,
                resource=self.resource,
                role=self.role,
                expires_at=self.expires_at,
                revoked_at=now,
                lateness_ms=self.lateness_ms,
                cause=cause,
                access_retained=retained,
                revoked_by=actor,
                revoke_reason=reason,
            ),
        )

    def drift(self, kind: DriftKind, repaired: bool, error: str | None = None) -> GrantDriftDetected:
        return GrantDriftDetected.create(
            source=SOURCE,
            request_id=self.request_id,
            data=GrantDriftDetectedData(
                grant_id=self.id,
                request_id=self.request_id,
                subject=self.subject,
                resource=self.resource,
                role=self.role,
                kind=kind,
                repaired=repaired,
                error=error,
            ),
        )
