"""Events and commands of the grant service."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from lapse_shared.events.envelope import Contract, Event


class GrantActivatedData(Contract):
    grant_id: uuid.UUID
    request_id: uuid.UUID
    subject: str = Field(description="Who holds the access.")
    resource: str
    role: str
    granted_at: datetime
    expires_at: datetime


class GrantActivated(Event):
    """Access is provisioned in the target and verified present."""

    TYPE: ClassVar[str] = "grant.activated"
    type: Literal["grant.activated"] = "grant.activated"
    data: GrantActivatedData


class GrantFailedData(Contract):
    grant_id: uuid.UUID
    request_id: uuid.UUID
    resource: str
    role: str
    reason: str = Field(description="Why provisioning failed, without secrets.")


class GrantFailed(Event):
    """Provisioning failed for good; the request ends as failed."""

    TYPE: ClassVar[str] = "grant.failed"
    type: Literal["grant.failed"] = "grant.failed"
    data: GrantFailedData


class RevokeCause(StrEnum):
    EXPIRED = "expired"
    SWEPT = "swept"


class GrantRevokedData(Contract):
    grant_id: uuid.UUID
    request_id: uuid.UUID
    subject: str
    resource: str
    role: str
    expires_at: datetime
    revoked_at: datetime
    lateness_ms: int = Field(description="revoked_at - expires_at in milliseconds.")
    cause: RevokeCause = Field(
        description="`expired`: the delayed expiry message; `swept`: the safety-net sweeper."
    )


class GrantRevoked(Event):
    """Access was removed from the target and verified gone."""

    TYPE: ClassVar[str] = "grant.revoked"
    type: Literal["grant.revoked"] = "grant.revoked"
    data: GrantRevokedData


class GrantExpireData(Contract):
    grant_id: uuid.UUID
    expires_at: datetime


class GrantExpire(Event):
    """Command, delivered late through the delay cascade: revoke this grant if still active."""

    TYPE: ClassVar[str] = "grant.expire"
    type: Literal["grant.expire"] = "grant.expire"
    data: GrantExpireData
