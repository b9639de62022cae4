"""`request.approved` events as the grant service's tests need them: genuine or forged alike."""

from __future__ import annotations

import uuid
from datetime import datetime

from lapse_shared.events import RequestApproved, RequestApprovedData, utcnow


def approval(
    *,
    subject: str,
    role: str,
    resource: str = "test-db",
    seconds: int = 60,
    approved_at: datetime | None = None,
    start_at: datetime | None = None,
    extends: uuid.UUID | None = None,
    source: str = "test",
) -> RequestApproved:
    """An approval of a new request (its own request id) for `subject` as `role` on `resource`."""
    request_id = uuid.uuid4()
    return RequestApproved.create(
        source=source,
        request_id=request_id,
        data=RequestApprovedData(
            request_id=request_id,
            requester=subject,
            resource=resource,
            role=role,
            duration_seconds=seconds,
            approved_at=approved_at or utcnow(),
            rule="r",
            policy_version="v",
            start_at=start_at,
            extends_grant_id=extends,
        ),
    )
