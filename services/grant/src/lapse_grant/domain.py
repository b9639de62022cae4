"""The Grant aggregate: the access provisioned for one approved request. Pure, no I/O.

scheduled -> provisioning -> active (-> extended: still active, later expires_at) -> revoked
provisioning -> failed   (a permanent error, transient ones past the deadline, or the window over)
scheduled -> revoked     (kill switch or release before the start: nothing was provisioned)
active | provisioning -> revoking -> revoked
    `revoking` is committed before the target is touched: a grant on its way out is never
    re-granted by the reconciler, whatever fails after; the retrier finishes it.

The window counts from the approval (or the scheduled start): `expires_at` is fixed when the
approval arrives, so a slow or retried provisioning shortens the access instead of moving its end.
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
    GrantExtended,
    GrantExtendedData,
    GrantFailed,
    GrantFailedData,
    GrantRevoked,
    GrantRevokedData,
    GrantRevokeFailing,
    GrantRevokeFailingData,
    GrantStart,
    GrantStartData,
    RequestApprovedData,
    RevokeCause,
)

SOURCE = "lapse/grant"


class GrantState(StrEnum):
    SCHEDULED = "scheduled"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    REVOKING = "revoking"
    REVOKED = "revoked"
    FAILED = "failed"


def refuse_extension(
    data: RequestApprovedData, grant_id: uuid.UUID, reason: str, cause: Event | None = None
) -> GrantFailed:
    """`grant.failed` for an approved extension that cannot apply; the grant itself is unchanged."""
    return GrantFailed.create(
        source=SOURCE,
        request_id=data.request_id,
        cause=cause,
        derived=True,
        data=GrantFailedData(
            grant_id=grant_id,
            request_id=data.request_id,
            resource=data.resource,
            role=data.role,
            reason=f"extension refused: {reason}",
        ),
    )


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
    ended_early_ms: int | None = None
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
    approved_at: datetime | None = None
    start_at: datetime | None = None
    extended_at: datetime | None = None
    extension_request_id: uuid.UUID | None = None
    # Failed after a grant call that may have worked: its access is removed (and verified gone)
    # by the retrier, with backoff like a revocation (`compensation.py`), before it is final.
    cleanup_pending: bool = False

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
        """A grant to provision now, or `scheduled` when its start is still ahead."""
        window_start = data.start_at or data.approved_at
        scheduled = data.start_at is not None and data.start_at > now
        return cls(
            target=target,
            id=uuid.uuid4(),
            request_id=data.request_id,
            subject=data.requester,
            resource=data.resource,
            role=data.role,
            provider=provider,
            state=GrantState.SCHEDULED if scheduled else GrantState.PROVISIONING,
            duration_seconds=data.duration_seconds,
            expires_at=window_start + timedelta(seconds=data.duration_seconds),
            provision_deadline=max(now, window_start) + provision_timeout,
            next_attempt_at=None if scheduled else now,
            approved_at=data.approved_at,
            start_at=data.start_at,
        )

    def start_command(self) -> GrantStart:
        """The delayed command that starts this scheduled grant at its start."""
        assert self.start_at is not None
        return GrantStart.create(
            source=SOURCE,
            request_id=self.request_id,
            data=GrantStartData(grant_id=self.id, start_at=self.start_at),
        )

    def start(self, now: datetime) -> None:
        """The scheduled start came: provision from now on (the window was fixed at approval)."""
        assert self.state is GrantState.SCHEDULED
        self.state = GrantState.PROVISIONING
        self.next_attempt_at = now

    def window_over(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def extension_problem(self, data: RequestApprovedData, now: datetime) -> str | None:
        """Why this grant cannot take the approved extension `data`, or None when it can."""
        if (self.subject, self.resource, self.role) != (data.requester, data.resource, data.role):
            return (
                f"grant {self.id} is for {self.subject} on {self.resource} as {self.role}, not for"
                f" {data.requester} on {data.resource} as {data.role}"
            )
        if self.state is not GrantState.ACTIVE:
            return f"grant {self.id} is {self.state.value}, not active: only an active grant can be extended"
        assert self.expires_at is not None
        if self.expires_at <= now or self.revoke_attempts > 0:
            # Its window is over and it is being revoked: extending now would resurrect lapsed access.
            return f"grant {self.id} lapsed at {self.expires_at.isoformat()} and is being revoked"
        return None

    def extend(
        self, extension_request_id: uuid.UUID, until: datetime, now: datetime, cause: Event | None = None
    ) -> GrantExtended:
        """Lengthen the window to `until` (never shorten it); the caller checked it may be extended."""
        assert self.expires_at is not None
        previous = self.expires_at
        self.expires_at = max(previous, until)
        self.extended_at, self.extension_request_id = now, extension_request_id
        return GrantExtended.create(
            source=SOURCE,
            request_id=extension_request_id,
            cause=cause,
            data=GrantExtendedData(
                grant_id=self.id,
                request_id=self.request_id,
                extension_request_id=extension_request_id,
                subject=self.subject,
                resource=self.resource,
                role=self.role,
                previous_expires_at=previous,
                expires_at=self.expires_at,
                extended_at=now,
            ),
        )

    def activate(
        self, now: datetime, cause: Event | None = None, *, credentials: bool = False
    ) -> tuple[GrantActivated, GrantExpire]:
        """Access is verified present; it ends at the `expires_at` fixed at approval."""
        self.state = GrantState.ACTIVE
        self.granted_at = now
        if self.expires_at is None:  # a grant recorded before windows counted from approval
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

    def provisioning_failed(
        self, error: str, now: datetime, *, transient: bool, granted: bool = False
    ) -> GrantFailed | None:
        """Record a failed attempt; the grant fails for good unless it is worth trying again.

        `granted`: this attempt called the target's grant. Failing then, or after earlier
        attempts (any of which may have granted), leaves the access to be removed.
        """
        self.provision_attempts += 1
        self.last_error = error
        if transient and self.provision_deadline is not None and now < self.provision_deadline:
            self.next_attempt_at = now + backoff(self.provision_attempts)
            return None
        reason = error if not transient else f"target unavailable until the deadline: {error}"
        cleanup = granted or self.provision_attempts > 1
        return self.fail(reason, cleanup_from=now if cleanup else None)

    def cleaned_up(self) -> None:
        """The access of this failed grant is verified absent in the target: the grant is final."""
        assert self.state is GrantState.FAILED
        self.cleanup_pending = False
        self.next_attempt_at = None

    def expire_command(self, cause: Event | None = None) -> GrantExpire:
        assert self.expires_at is not None
        return GrantExpire.create(
            source=SOURCE,
            request_id=self.request_id,
            cause=cause,
            data=GrantExpireData(grant_id=self.id, expires_at=self.expires_at),
        )

    def fail(self, reason: str, *, cleanup_from: datetime | None = None) -> GrantFailed:
        """Fail for good; with `cleanup_from`, a grant call may have worked: remove it from then on."""
        self.state = GrantState.FAILED
        self.failure_reason = reason
        self.next_attempt_at = cleanup_from
        self.cleanup_pending = cleanup_from is not None
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

    def begin_revocation(self, cause: RevokeCause, *, actor: str | None, reason: str | None) -> None:
        """Mark the grant `revoking`: committed before the target is touched, so that nothing
        (the reconciler, a provisioning retry) brings its access back whatever fails afterwards."""
        assert self.state in (GrantState.ACTIVE, GrantState.PROVISIONING, GrantState.REVOKING)
        self.state = GrantState.REVOKING
        # A kill switch or release stays one when the retrier finishes it; an expiry may become one.
        if self.revoke_cause not in (RevokeCause.REVOKED, RevokeCause.RELEASED):
            self.revoke_cause = cause.value
            self.revoked_by, self.revoke_reason = actor, reason

    def revoked(
        self,
        now: datetime,
        cause: RevokeCause,
        *,
        retained: bool = False,
        actor: str | None = None,
        reason: str | None = None,
        provisioned: bool | None = None,
    ) -> GrantRevoked:
        """Access is verified gone (or kept by another grant); lateness is against the expiry.

        An early end (kill switch, release) is recorded as `ended_early_ms`, never as a negative
        lateness: a grant ended weeks before its expiry must not look weeks "late" in reverse.
        A scheduled grant ends here too, before anything was provisioned (`provisioned` false).
        """
        assert self.expires_at is not None
        if provisioned is None:
            provisioned = self.state is not GrantState.SCHEDULED
        if self.state is GrantState.REVOKING and self.revoke_cause in (
            RevokeCause.REVOKED,
            RevokeCause.RELEASED,
        ):
            # The retrier finishing a kill switch or a release: it stays theirs, with who and why.
            cause = RevokeCause(self.revoke_cause)
            actor, reason = self.revoked_by, self.revoke_reason
        self.state = GrantState.REVOKED
        self.revoked_at = now
        delta_ms = round((now - self.expires_at).total_seconds() * 1000)
        self.lateness_ms = max(0, delta_ms)
        self.ended_early_ms = -delta_ms if delta_ms < 0 else None
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
                ended_early_ms=self.ended_early_ms,
                cause=cause,
                access_retained=retained,
                revoked_by=actor,
                revoke_reason=reason,
                provisioned=provisioned,
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
