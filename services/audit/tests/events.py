"""Events of one access request, as the services publish them (JSON form), for audit unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def event(
    kind: str, request_id: uuid.UUID, data: dict[str, Any], at: datetime, source: str
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": kind,
        "source": source,
        "time": at.isoformat(),
        "subject": str(request_id),
        "correlation_id": str(request_id),
        "causation_id": None,
        "data": data,
    }


def lifecycle(
    request_id: uuid.UUID | None = None,
    *,
    requester: str = "alice",
    start: datetime = T0,
    minutes: int = 30,
    cause: str = "expired",
    extra_submitted: dict[str, Any] | None = None,
    reviewers: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """submitted, decided, [reviewed...], approved, activated, revoked."""
    rid = request_id or uuid.uuid4()
    grant_id = str(uuid.uuid4())
    granted, expires = start + timedelta(seconds=2), start + timedelta(seconds=2, minutes=minutes)
    revoked = expires + timedelta(milliseconds=40) if cause != "revoked" else start + timedelta(minutes=5)
    events = [
        event(
            "request.submitted",
            rid,
            {
                "request_id": str(rid),
                "requester": {"subject": requester, "groups": ["developers"]},
                "resource": "orders-db",
                "role": "orders_readonly",
                "duration_seconds": minutes * 60,
                "reason": "INC-1234: stuck orders",
                "submitted_at": start.isoformat(),
                **(extra_submitted or {}),
            },
            start,
            "lapse/request",
        ),
        event(
            "policy.decided",
            rid,
            {
                "request_id": str(rid),
                "outcome": "review" if reviewers else "approve",
                "rule": "developers-read",
                "reasons": ["matched"],
                "effective_duration_seconds": minutes * 60,
                "policy_version": "sha256:abc",
            },
            start,
            "lapse/policy",
        ),
    ]
    for reviewer in reviewers:
        events.append(
            event(
                "request.reviewed",
                rid,
                {
                    "request_id": str(rid),
                    "reviewer": reviewer,
                    "decision": "approve",
                    "comment": "ok",
                },
                start + timedelta(seconds=1),
                "lapse/request",
            )
        )
    events += [
        event(
            "request.approved",
            rid,
            {
                "request_id": str(rid),
                "requester": requester,
                "resource": "orders-db",
                "role": "orders_readonly",
                "duration_seconds": minutes * 60,
                "approved_at": (start + timedelta(seconds=1)).isoformat(),
                "rule": "developers-read",
                "policy_version": "sha256:abc",
            },
            start + timedelta(seconds=1),
            "lapse/request",
        ),
        event(
            "grant.activated",
            rid,
            {
                "grant_id": grant_id,
                "request_id": str(rid),
                "subject": requester,
                "resource": "orders-db",
                "role": "orders_readonly",
                "granted_at": granted.isoformat(),
                "expires_at": expires.isoformat(),
            },
            granted,
            "lapse/grant",
        ),
        event(
            "grant.revoked",
            rid,
            {
                "grant_id": grant_id,
                "request_id": str(rid),
                "subject": requester,
                "resource": "orders-db",
                "role": "orders_readonly",
                "expires_at": expires.isoformat(),
                "revoked_at": revoked.isoformat(),
                "lateness_ms": 40 if cause != "revoked" else 0,
                "cause": cause,
                **({"revoked_by": "sec-oncall", "revoke_reason": "suspicious"} if cause == "revoked" else {}),
            },
            revoked,
            "lapse/grant",
        ),
    ]
    return events
