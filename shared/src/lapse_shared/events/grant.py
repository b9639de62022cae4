"""Events and commands of the grant service."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from lapse_shared.events.envelope import Contract, Event


class GrantActivatedData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    request_id: uuid.UUID = Field(description="The request the grant was provisioned for.")
    subject: str = Field(description="Who holds the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    granted_at: datetime = Field(description="When the access was provisioned.")
    expires_at: datetime = Field(description="When it ends: the grant service revokes it then.")
    credentials_available: bool = Field(
        False,
        description="The provider made credentials (e.g. an ephemeral login): the requester fetches"
        " them once from the grant service, `POST /v1/grants/{grant_id}/credentials`. Never in events.",
    )


class GrantActivated(Event):
    """Access is provisioned in the target and verified present."""

    TYPE: ClassVar[str] = "grant.activated"
    type: Literal["grant.activated"] = "grant.activated"
    data: GrantActivatedData


class GrantFailedData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    request_id: uuid.UUID = Field(description="The request the grant was provisioned for.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    reason: str = Field(description="Why provisioning failed, without secrets.")


class GrantFailed(Event):
    """Provisioning failed for good; the request ends as failed."""

    TYPE: ClassVar[str] = "grant.failed"
    type: Literal["grant.failed"] = "grant.failed"
    data: GrantFailedData


class RevokeCause(StrEnum):
    EXPIRED = "expired"
    SWEPT = "swept"
    REVOKED = "revoked"
    RELEASED = "released"


class GrantRevokedData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    request_id: uuid.UUID = Field(description="The request the grant was provisioned for.")
    subject: str = Field(description="Who held the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    expires_at: datetime = Field(description="The end of the window (after any extension).")
    revoked_at: datetime = Field(description="When the access was verified gone.")
    lateness_ms: int = Field(
        description="revoked_at - expires_at in milliseconds when the access ended at or after its"
        " expiry; 0 when it ended early (see `ended_early_ms`). Producers before v1.1 sent a"
        " negative value for an early end."
    )
    ended_early_ms: int | None = Field(
        None,
        description="expires_at - revoked_at in milliseconds when the access ended before its"
        " expiry (kill switch, release, a scheduled grant ended before its start); null otherwise."
        " May exceed 32 bits: a 40-day grant ended on its first day is 3.4e9 ms early.",
    )
    cause: RevokeCause = Field(
        description="`expired`: the delayed expiry message; `swept`: the safety-net sweeper or a"
        " retry after a failed attempt; `revoked`: ended early by an administrator (kill switch);"
        " `released`: ended early by the requester."
    )
    access_retained: bool = Field(
        False,
        description="True when another active grant of the same access keeps it in the target:"
        " this grant ended, the access stays until the last one ends.",
    )
    revoked_by: str | None = Field(None, description="For `revoked` and `released`: who ended it.")
    revoke_reason: str | None = Field(None, description="For `revoked` and `released`: why.")
    provisioned: bool = Field(
        True,
        description="False when the grant was still scheduled (its start not reached): it ended"
        " before anything was provisioned, so nothing was removed from the target.",
    )


class GrantRevoked(Event):
    """Access was removed from the target and verified gone."""

    TYPE: ClassVar[str] = "grant.revoked"
    type: Literal["grant.revoked"] = "grant.revoked"
    data: GrantRevokedData


class GrantExpireData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    expires_at: datetime = Field(
        description="The end this command was scheduled for; a grant extended since is left alone."
    )


class GrantExpire(Event):
    """Command, delivered late through the delay cascade: revoke this grant if still active."""

    TYPE: ClassVar[str] = "grant.expire"
    type: Literal["grant.expire"] = "grant.expire"
    data: GrantExpireData


class GrantStartData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    start_at: datetime = Field(description="The scheduled start: provision the grant then.")


class GrantStart(Event):
    """Command, delivered late through the delay cascade: provision this scheduled grant now.

    A duplicate, or one for a grant that no longer waits (started by the retrier, revoked), is a no-op.
    """

    TYPE: ClassVar[str] = "grant.start"
    type: Literal["grant.start"] = "grant.start"
    data: GrantStartData


class GrantExtendedData(Contract):
    grant_id: uuid.UUID = Field(description="The grant whose window was lengthened.")
    request_id: uuid.UUID = Field(description="The grant's original request.")
    extension_request_id: uuid.UUID = Field(description="The approved extension request.")
    subject: str = Field(description="Who holds the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    previous_expires_at: datetime = Field(description="The end of the window before this extension.")
    expires_at: datetime = Field(
        description="The new end of the window: the later of the previous end and the extension's"
        " `approved_at + duration`."
    )
    extended_at: datetime = Field(description="When the window was lengthened.")


class GrantExtended(Event):
    """An approved extension lengthened an active grant; its access stays until the new `expires_at`.

    Published for the extension request (`subject` and `correlation_id` are the extension's request id).
    """

    TYPE: ClassVar[str] = "grant.extended"
    type: Literal["grant.extended"] = "grant.extended"
    data: GrantExtendedData


class GrantRevokeFailingData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    request_id: uuid.UUID = Field(description="The request the grant was provisioned for.")
    subject: str = Field(description="Who holds the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    expires_at: datetime = Field(description="When the access should have ended.")
    attempts: int = Field(description="Failed revocation attempts so far; retries go on.")
    error: str = Field(description="The last error, without secrets.")


class GrantRevokeFailing(Event):
    """Revocation keeps failing past the alert threshold; Lapse goes on retrying until it works."""

    TYPE: ClassVar[str] = "grant.revoke_failing"
    type: Literal["grant.revoke_failing"] = "grant.revoke_failing"
    data: GrantRevokeFailingData


class DriftKind(StrEnum):
    MISSING = "missing"
    UNEXPECTED = "unexpected"


class GrantDriftDetectedData(Contract):
    grant_id: uuid.UUID = Field(description="The grant (one provisioning of one approved request).")
    request_id: uuid.UUID = Field(description="The request the grant was provisioned for.")
    subject: str = Field(description="Whose access drifted.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    kind: DriftKind = Field(
        description="`missing`: an active grant's access is absent from the target;"
        " `unexpected`: an ended grant's access is present again (e.g. re-granted by hand)."
    )
    repaired: bool = Field(description="Whether the target was put back as Lapse says it should be.")
    error: str | None = Field(None, description="Why the repair failed, if it did.")


class GrantDriftDetected(Event):
    """The target differed from what Lapse granted; the reconciler found and repaired it."""

    TYPE: ClassVar[str] = "grant.drift_detected"
    type: Literal["grant.drift_detected"] = "grant.drift_detected"
    data: GrantDriftDetectedData


class GrantRevokeData(Contract):
    grant_id: uuid.UUID | None = Field(None, description="One grant, whatever its state.")
    request_id: uuid.UUID | None = Field(
        None,
        description="The grant of this request, whatever its state (scheduled, provisioning,"
        " active); when its approval has not reached the grant service yet, the approval is refused"
        " when it arrives. Used by a break-glass deny and by a release before the start.",
    )
    subject: str | None = Field(None, description="Every active grant of this subject.")
    resource: str | None = Field(None, description="Every active grant on this resource.")
    reason: str = Field(min_length=1, description="Why; recorded on each grant.revoked.")
    actor: str = Field(min_length=1, description="Who asked for it.")
    cause: Literal[RevokeCause.REVOKED, RevokeCause.RELEASED] = Field(
        RevokeCause.REVOKED,
        description="`revoked` (kill switch, an administrator) or `released` (the requester ended it early).",
    )


class GrantRevoke(Event):
    """Command (kill switch): revoke one grant, a request's grant, every grant of a subject, or
    every grant on a resource.

    When both subject and resource are given, only grants matching both are revoked. Scheduled and
    still-provisioning grants end too, and an approval given before the command that arrives after
    it is refused: nothing the command covered becomes active afterwards.
    """

    TYPE: ClassVar[str] = "grant.revoke"
    type: Literal["grant.revoke"] = "grant.revoke"
    data: GrantRevokeData
