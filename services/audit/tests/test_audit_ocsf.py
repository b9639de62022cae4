"""OCSF records of audit entries validate against the OCSF 1.7.0 models (pydantic-ocsf)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from ocsf.v1_7_0.events import ApiActivity, UserAccess
from pydantic import BaseModel

from lapse_audit.ocsf import API_ACTIVITY, USER_ACCESS_MANAGEMENT, to_ocsf
from services.audit.tests.events import T0, event, lifecycle

MODELS: dict[int, type[BaseModel]] = {USER_ACCESS_MANAGEMENT: UserAccess, API_ACTIVITY: ApiActivity}


def _unknown_fields(model: Any, path: str = "") -> list[str]:
    """Fields the OCSF model does not define (pydantic-ocsf allows extras; we want none)."""
    if isinstance(model, BaseModel):
        found = [f"{path}.{k}" for k in (model.model_extra or {}) if not path.endswith("unmapped")]
        for name in type(model).model_fields:
            found += _unknown_fields(getattr(model, name), f"{path}.{name}")
        return found
    if isinstance(model, list):
        return [f for i, item in enumerate(model) for f in _unknown_fields(item, f"{path}[{i}]")]
    return []


def validated(record: dict[str, Any]) -> BaseModel:
    model = MODELS[record["class_uid"]].model_validate(record)
    assert _unknown_fields(model) == [], "fields outside the OCSF class"
    return model


@pytest.mark.parametrize("cause", ["expired", "revoked"])
def test_every_event_of_a_lifecycle_is_a_valid_ocsf_record(cause: str) -> None:
    events = lifecycle(cause=cause, reviewers=("bob",), extra_submitted={"ticket": "CHG-7"})
    records = [to_ocsf(seq, T0.isoformat(), e) for seq, e in enumerate(events, 1)]
    for record, e in zip(records, events, strict=True):
        validated(record)
        assert record["metadata"]["uid"] == e["id"]
        assert record["metadata"]["correlation_uid"] == e["correlation_id"]
        assert record["metadata"]["event_code"] == e["type"]
    kinds = {e["type"]: r for e, r in zip(events, records, strict=True)}
    granted, revoked = kinds["grant.activated"], kinds["grant.revoked"]
    assert (granted["class_uid"], granted["activity_id"], granted["type_uid"]) == (3005, 1, 300501)
    assert (revoked["class_uid"], revoked["activity_id"], revoked["type_uid"]) == (3005, 2, 300502)
    assert granted["user"]["name"] == "alice"
    assert granted["privileges"] == ["orders_readonly"]
    assert granted["resource"]["name"] == "orders-db"
    submitted = kinds["request.submitted"]
    assert (submitted["class_uid"], submitted["activity_id"]) == (6003, 1)
    assert submitted["actor"]["user"]["name"] == "alice"
    assert submitted["unmapped"]["ticket"] == "CHG-7"
    assert kinds["request.reviewed"]["actor"]["user"]["name"] == "bob"
    assert (kinds["request.approved"]["class_uid"], kinds["request.approved"]["activity_id"]) == (6003, 3)
    if cause == "revoked":
        assert revoked["actor"]["user"]["name"] == "sec-oncall"


def test_failed_provisioning_is_a_failed_privilege_assignment() -> None:
    rid = uuid.uuid4()
    failed = event(
        "grant.failed",
        rid,
        {
            "grant_id": str(uuid.uuid4()),
            "request_id": str(rid),
            "resource": "orders-db",
            "role": "r",
            "reason": "target down",
        },
        T0,
        "lapse/grant",
    )
    record = to_ocsf(1, T0.isoformat(), failed)
    validated(record)
    assert (record["class_uid"], record["activity_id"], record["status_id"]) == (3005, 1, 2)
    assert record["status_detail"] == "target down"


def test_an_unknown_event_type_is_still_published_as_api_activity_other() -> None:
    rid = uuid.uuid4()
    record = to_ocsf(9, T0.isoformat(), event("request.frobbed", rid, {"x": 1}, T0, "lapse/request"))
    validated(record)
    assert (record["class_uid"], record["activity_id"]) == (6003, 99)
    assert record["metadata"]["sequence"] == 9


def test_secrets_in_event_data_never_reach_the_ocsf_record() -> None:
    rid = uuid.uuid4()
    leaky = event(
        "grant.activated",
        rid,
        {
            "grant_id": str(uuid.uuid4()),
            "request_id": str(rid),
            "subject": "alice",
            "resource": "orders-db",
            "role": "r",
            "granted_at": T0.isoformat(),
            "expires_at": T0.isoformat(),
            "password": "hunter2-s3cret",
            "credentials": {"token": "tok-s3cret"},
            "dsn": "postgresql://u:pw-s3cret@h/db",
        },
        T0,
        "lapse/grant",
    )
    text = json.dumps(to_ocsf(1, T0.isoformat(), leaky))
    assert "s3cret" not in text
