"""Audit entries as OCSF 1.7.0 records for the SIEM stream. Pure.

- grant.activated / grant.failed / grant.revoked: User Access Management (3005), activity
  Assign (1) or Revoke (2) Privileges; the privilege is the role, the resource the catalogue name.
- Every other event (request.*, policy.decided, future types): API Activity (6003), the Lapse
  request API seen as an API: a submission is a Create, every later step of the request an Update,
  an unknown type Other; the step itself is in `api.operation` and `metadata.event_code`.

`metadata.uid` is the event id (a SIEM's dedup key: the stream is at-least-once), and
`metadata.correlation_uid` the request id. Fields are copied from an allow-list, never the whole
event, so nothing a producer added later (a secret by mistake) reaches the SIEM unseen.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

OCSF_VERSION = "1.7.0"
USER_ACCESS_MANAGEMENT = 3005
API_ACTIVITY = 6003
_IAM_CATEGORY, _APP_CATEGORY = 3, 6
_ASSIGN, _REVOKE = 1, 2
_CREATE, _UPDATE, _OTHER = 1, 3, 99
_SUCCESS, _FAILURE = 1, 2
_INFORMATIONAL, _LOW, _MEDIUM = 1, 2, 3

_ACTIVITY_NAMES = {
    USER_ACCESS_MANAGEMENT: {_ASSIGN: "Assign Privileges", _REVOKE: "Revoke Privileges"},
    API_ACTIVITY: {_CREATE: "Create", _UPDATE: "Update", _OTHER: "Other"},
}
_CLASS_NAMES = {USER_ACCESS_MANAGEMENT: "User Access Management", API_ACTIVITY: "API Activity"}
_CATEGORY = {
    USER_ACCESS_MANAGEMENT: (_IAM_CATEGORY, "Identity & Access Management"),
    API_ACTIVITY: (_APP_CATEGORY, "Application Activity"),
}
_REQUEST_STEPS = {
    "request.submitted": _CREATE,
    "policy.decided": _UPDATE,
    "request.reviewed": _UPDATE,
    "request.approved": _UPDATE,
    "request.denied": _UPDATE,
    "request.cancelled": _UPDATE,
    "request.expired": _UPDATE,
}
# Scalar data fields a SIEM may want, per name; anything else stays out of the record.
_SAFE_DATA_FIELDS = (
    "outcome",
    "rule",
    "policy_version",
    "duration_seconds",
    "effective_duration_seconds",
    "approvals_required",
    "cause",
    "lateness_ms",
    "break_glass",
    "ticket",
    "decision",
    "kind",
    "repaired",
    "attempts",
    "access_retained",
    "revoked_by",
    "grant_id",
    "request_id",
    "start_at",
    "resource",
    "role",
)


def _ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _user(name: Any) -> dict[str, Any] | None:
    return {"name": name, "uid": name} if isinstance(name, str) and name else None


def _prune(value: Any) -> Any:
    """Drop None and empty containers: OCSF treats absent and null alike, and records stay small."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value if v is not None]
    return value


def to_ocsf(
    seq: int, recorded_at: str, event: dict[str, Any], principal: str | None = None
) -> dict[str, Any]:
    """The OCSF record of one chain entry.

    `principal`: who the request is for, when the event itself does not say (grant.failed).
    """
    kind = str(event.get("type", ""))
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    if kind in ("grant.activated", "grant.failed", "grant.revoked"):
        class_uid = USER_ACCESS_MANAGEMENT
        activity = _REVOKE if kind == "grant.revoked" else _ASSIGN
        body = _access_management(kind, data, principal)
    else:
        class_uid = API_ACTIVITY
        activity = _REQUEST_STEPS.get(kind, _OTHER)
        body = _api_activity(kind, event, data)
    category_uid, category_name = _CATEGORY[class_uid]
    activity_name = _ACTIVITY_NAMES[class_uid][activity]
    record: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": _CLASS_NAMES[class_uid],
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity,
        "type_name": f"{_CLASS_NAMES[class_uid]}: {activity_name}",
        "time": _ms(event.get("time")),
        "severity_id": body.pop("severity_id", _INFORMATIONAL),
        "status_id": body.pop("status_id", _SUCCESS),
        "message": f"{kind} for request {event.get('subject')}",
        "metadata": {
            "version": OCSF_VERSION,
            "uid": str(event.get("id")),
            "correlation_uid": str(event.get("correlation_id")),
            "event_code": kind,
            "sequence": seq,
            "logged_time": _ms(recorded_at),
            "log_name": "lapse.audit",
            "log_provider": _text(event.get("source")),
            "product": {
                "name": "Lapse",
                "vendor_name": "Lapse",
                "feature": {"name": _text(event.get("source"))},
            },
        },
        "unmapped": {k: data[k] for k in _SAFE_DATA_FIELDS if isinstance(data.get(k), str | int | bool)},
        **body,
    }
    if event.get("causation_id"):
        record["unmapped"]["causation_id"] = str(event["causation_id"])
    pruned: dict[str, Any] = _prune(record)
    return pruned


def _access_management(kind: str, data: dict[str, Any], principal: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        # OCSF requires the user; "unknown" only if the request's submission was never seen.
        "user": _user(data.get("subject")) or _user(principal) or {"uid": "unknown"},
        "privileges": [data["role"]] if isinstance(data.get("role"), str) else [],
        "resource": {"name": _text(data.get("resource")), "type": "lapse.resource"},
        "start_time": _ms(data.get("granted_at")),
        "end_time": _ms(data.get("revoked_at")) if kind == "grant.revoked" else _ms(data.get("expires_at")),
    }
    if kind == "grant.failed":
        body |= {"status_id": _FAILURE, "status_detail": _text(data.get("reason")), "severity_id": _LOW}
    if kind == "grant.revoked" and data.get("cause") in ("revoked", "released"):
        body["actor"] = {"user": _user(data.get("revoked_by"))}
        body["status_detail"] = _text(data.get("revoke_reason"))
    return body


def _api_activity(kind: str, event: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    requester = data.get("requester")
    who = requester.get("subject") if isinstance(requester, dict) else requester
    service = _text(event.get("source")) or "lapse"
    actor_user = _user(who) if kind == "request.submitted" else None
    reviewer = data.get("reviewer") or data.get("approver")
    if isinstance(reviewer, dict):
        reviewer = reviewer.get("subject")
    if kind == "request.reviewed":
        actor_user = _user(reviewer)
    elif kind == "request.cancelled":
        actor_user = _user(data.get("cancelled_by"))
    body: dict[str, Any] = {
        "actor": {"user": actor_user, "app_name": service},
        "api": {"operation": kind, "service": {"name": service}},
        "src_endpoint": {"svc_name": service},
        "resources": [
            {
                "uid": str(event.get("subject")),
                "type": "lapse.access_request",
                "name": _text(data.get("resource")),
            },
        ],
    }
    if kind == "request.submitted" and isinstance(data.get("reason"), str):
        body["status_detail"] = data["reason"]
    if kind == "request.denied" or (kind == "policy.decided" and data.get("outcome") == "deny"):
        body["severity_id"] = _LOW
    if data.get("break_glass") is True:
        body["severity_id"] = _MEDIUM
    return body
