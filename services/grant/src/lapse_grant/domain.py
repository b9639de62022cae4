"""The Grant aggregate: the access provisioned for one approved request. Pure, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from lapse_shared.events import (
    Event,
    GrantActivated,
    GrantActivatedData,
    GrantExpire,
    GrantExpireData,
    GrantFailed,
    GrantFailedData,
    GrantRevoked,
    GrantRevokedData,
    RequestApprovedData,
    RevokeCause,
)

SOURCE = "lapse/grant"


class GrantState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    FAILED = "failed"


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

    @classmethod
    def for_approval(cls, data: RequestApprovedData, provider: str) -> Grant:
        return cls(
            id=uuid.uuid4(),
            request_id=data.request_id,
            subject=data.requester,
            resource=data.resource,
            role=data.role,
            provider=provider,
            state=GrantState.FAILED,  # until activate() succeeds
            duration_seconds=data.duration_seconds,
        )

    def activate(self, now: datetime, cause: Event) -> tuple[GrantActivated, GrantExpire]:
        """Access is verified present: the window starts now."""
        self.state = GrantState.ACTIVE
        self.granted_at = now
        self.expires_at = now + timedelta(seconds=self.duration_seconds)
        activated = GrantActivated.create(
            source=SOURCE,
            request_id=self.request_id,
            cause=cause,
            derived=True,
            data=GrantActivatedData(
                grant_id=self.id,
                request_id=self.request_id,
                subject=self.subject,
                resource=self.resource,
                role=self.role,
                granted_at=now,
                expires_at=self.expires_at,
            ),
        )
        return activated, self.expire_command(activated)

    def expire_command(self, cause: Event | None = None) -> GrantExpire:
        assert self.expires_at is not None
        return GrantExpire.create(
            source=SOURCE,
            request_id=self.request_id,
            cause=cause,
            data=GrantExpireData(grant_id=self.id, expires_at=self.expires_at),
        )

    def fail(self, reason: str, cause: Event) -> GrantFailed:
        self.state = GrantState.FAILED
        self.failure_reason = reason
        return GrantFailed.create(
            source=SOURCE,
            request_id=self.request_id,
            cause=cause,
            derived=True,
            data=GrantFailedData(
                grant_id=self.id,
                request_id=self.request_id,
                resource=self.resource,
                role=self.role,
                reason=reason,
            ),
        )

    def revoked(self, now: datetime, cause: RevokeCause) -> GrantRevoked:
        """Access is verified gone; lateness is measured against the promised expiry."""
        assert self.expires_at is not None
        self.state = GrantState.REVOKED
        self.revoked_at = now
        self.lateness_ms = round((now - self.expires_at).total_seconds() * 1000)
        self.revoke_cause = cause.value
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
            ),
        )
