"""The access report: every grant of a period with who asked, why, who approved, when it ended. Pure.

Built only from the audit log's events, folded request by request, so it shows what the trail
proves rather than what a service's table says now. Fields that the event contract does not carry
yet (tickets, reviewers) are read when they appear and left empty until then.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

COLUMNS = (
    "request_id",
    "grant_id",
    "requester",
    "resource",
    "role",
    "reason",
    "ticket",
    "approvers",
    "decision",
    "rule",
    "policy_version",
    "break_glass",
    "submitted_at",
    "approved_at",
    "granted_at",
    "expires_at",
    "ended_at",
    "status",
    "ended_by",
    "lateness_ms",
)


@dataclass
class GrantRow:
    request_id: str
    grant_id: str | None = None
    requester: str | None = None
    resource: str | None = None
    role: str | None = None
    reason: str | None = None
    ticket: str | None = None
    approvers: list[str] = field(default_factory=list)
    decision: str | None = None
    rule: str | None = None
    policy_version: str | None = None
    break_glass: bool = False
    submitted_at: str | None = None
    approved_at: str | None = None
    granted_at: str | None = None
    expires_at: str | None = None
    ended_at: str | None = None
    status: str = "active"
    """active, expired (ended at its time, by the expiry message or the sweeper), revoked (ended early)."""
    ended_by: str | None = None
    lateness_ms: int | None = None


@dataclass
class _Request:
    request_id: str
    base: dict[str, Any] = field(default_factory=dict)
    approvers: list[str] = field(default_factory=list)
    grants: dict[str, GrantRow] = field(default_factory=dict)


def _name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("subject")
    return value if isinstance(value, str) and value else None


def _fold(state: _Request, event: dict[str, Any]) -> None:
    kind, data = event.get("type"), event.get("data") or {}
    base = state.base
    if kind == "request.submitted":
        base |= {
            "requester": _name(data.get("requester")),
            "resource": data.get("resource"),
            "role": data.get("role"),
            "reason": data.get("reason"),
            "ticket": data.get("ticket"),
            "submitted_at": data.get("submitted_at"),
            "break_glass": bool(data.get("break_glass", False)),
        }
    elif kind == "policy.decided":
        base |= {
            "decision": data.get("outcome"),
            "rule": data.get("rule"),
            "policy_version": data.get("policy_version"),
        }
    elif kind == "request.reviewed":
        reviewer = _name(data.get("reviewer")) or _name(data.get("approver")) or _name(data.get("actor"))
        verdict = data.get("decision", data.get("outcome", "approve"))
        if reviewer and verdict in ("approve", "approved") and reviewer not in state.approvers:
            state.approvers.append(reviewer)
    elif kind == "request.approved":
        base |= {"approved_at": data.get("approved_at")}
        for key in ("rule", "policy_version"):
            base.setdefault(key, data.get(key))
        base["break_glass"] = base.get("break_glass", False) or bool(data.get("break_glass", False))
    elif kind == "grant.activated":
        row = state.grants.setdefault(str(data.get("grant_id")), GrantRow(state.request_id))
        row.grant_id = str(data.get("grant_id"))
        row.granted_at, row.expires_at = data.get("granted_at"), data.get("expires_at")
        row.requester = row.requester or data.get("subject")
        row.resource, row.role = data.get("resource"), data.get("role")
    elif kind == "grant.revoked":
        row = state.grants.setdefault(str(data.get("grant_id")), GrantRow(state.request_id))
        row.ended_at = data.get("revoked_at")
        row.lateness_ms = data.get("lateness_ms")
        early = data.get("cause") == "revoked"
        row.status = "revoked" if early else "expired"
        row.ended_by = data.get("revoked_by") if early else data.get("cause")
    elif kind == "grant.extended" and data.get("grant_id"):
        row = state.grants.setdefault(str(data["grant_id"]), GrantRow(state.request_id))
        row.expires_at = data.get("expires_at", row.expires_at)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def build(events: Iterable[dict[str, Any]], start: datetime, end: datetime) -> list[GrantRow]:
    """Rows of every grant whose access window overlaps [start, end), ordered by granted time.

    `events` are chain entries' events in chain order (any mix of requests).
    """
    requests: dict[str, _Request] = {}
    for event in events:
        key = str(event.get("correlation_id"))
        _fold(requests.setdefault(key, _Request(key)), event)
    rows: list[GrantRow] = []
    for state in requests.values():
        for row in state.grants.values():
            granted = _parse(row.granted_at)
            if granted is None:
                continue  # a revocation whose activation is outside what was read
            ended = _parse(row.ended_at)
            if granted >= end or (ended is not None and ended < start):
                continue
            for key, value in state.base.items():
                if getattr(row, key, None) in (None, False):
                    setattr(row, key, value)
            row.approvers = list(state.approvers)
            rows.append(row)
    rows.sort(key=lambda r: (r.granted_at or "", r.request_id))
    return rows


def as_json(rows: list[GrantRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def as_csv(rows: list[GrantRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        values = asdict(row)
        values["approvers"] = ";".join(row.approvers)
        writer.writerow([_cell(values[c]) for c in COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> Any:
    """Free text (a reason) must not run as a spreadsheet formula when an auditor opens the file."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
