"""Unit tests of the Grant aggregate (lapse_grant.domain): pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lapse_grant.domain import Grant, GrantState
from lapse_shared.events import (
    GrantActivated,
    GrantExpire,
    GrantFailed,
    GrantRevoked,
    RequestApproved,
    RequestApprovedData,
    RevokeCause,
)

NOW = datetime(2024, 5, 1, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def approval() -> RequestApproved:
    request_id = uuid.uuid4()
    return RequestApproved.create(
        source="lapse/request",
        request_id=request_id,
        data=RequestApprovedData(
            request_id=request_id,
            requester="alice",
            resource="orders-db",
            role="app_readonly",
            duration_seconds=5400,
            approved_at=NOW - timedelta(seconds=1),
            rule="oncall-readonly",
            policy_version="sha256:" + "0" * 64,
        ),
    )


def _active(approval: RequestApproved) -> Grant:
    grant = Grant.for_approval(approval.data, "postgres-role")
    grant.activate(NOW, cause=approval)
    return grant


def test_for_approval_copies_the_request_and_is_not_active_yet(approval: RequestApproved) -> None:
    grant = Grant.for_approval(approval.data, "postgres-role")
    assert grant.request_id == approval.data.request_id
    assert (grant.subject, grant.resource, grant.role) == ("alice", "orders-db", "app_readonly")
    assert grant.provider == "postgres-role"
    assert grant.duration_seconds == 5400
    assert grant.state is GrantState.FAILED
    assert grant.granted_at is None
    assert grant.expires_at is None


def test_each_grant_gets_its_own_id(approval: RequestApproved) -> None:
    assert Grant.for_approval(approval.data, "p").id != Grant.for_approval(approval.data, "p").id


def test_activate_starts_the_window_now_and_sets_expiry_after_the_duration(
    approval: RequestApproved,
) -> None:
    grant = Grant.for_approval(approval.data, "postgres-role")
    grant.activate(NOW, cause=approval)
    assert grant.state is GrantState.ACTIVE
    assert grant.granted_at == NOW
    assert grant.expires_at == NOW + timedelta(seconds=5400)


def test_activate_returns_grant_activated_and_the_expire_command(approval: RequestApproved) -> None:
    grant = Grant.for_approval(approval.data, "postgres-role")
    activated, expire = grant.activate(NOW, cause=approval)
    assert isinstance(activated, GrantActivated)
    assert activated.data.grant_id == grant.id
    assert activated.data.request_id == approval.data.request_id
    assert activated.data.subject == "alice"
    assert activated.data.granted_at == NOW
    assert activated.data.expires_at == NOW + timedelta(minutes=90)
    assert activated.causation_id == approval.id
    assert activated.correlation_id == approval.data.request_id
    assert isinstance(expire, GrantExpire)
    assert expire.type == "grant.expire"
    assert expire.data.grant_id == grant.id
    assert expire.data.expires_at == activated.data.expires_at
    assert expire.causation_id == activated.id


def test_activated_event_id_is_derived_from_the_approval(approval: RequestApproved) -> None:
    first, _ = Grant.for_approval(approval.data, "p").activate(NOW, cause=approval)
    second, _ = Grant.for_approval(approval.data, "p").activate(NOW, cause=approval)
    assert first.id == second.id


def test_revoked_after_expiry_has_positive_lateness(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    event = grant.revoked(grant.expires_at + timedelta(seconds=1, milliseconds=500), RevokeCause.EXPIRED)
    assert grant.state is GrantState.REVOKED
    assert grant.lateness_ms == 1500
    assert grant.revoke_cause == "expired"
    assert grant.revoked_at == grant.expires_at + timedelta(milliseconds=1500)
    assert isinstance(event, GrantRevoked)
    assert event.data.lateness_ms == 1500
    assert event.data.cause is RevokeCause.EXPIRED
    assert event.data.expires_at == grant.expires_at
    assert event.data.revoked_at == grant.revoked_at
    assert event.data.grant_id == grant.id


def test_revoked_before_expiry_has_negative_lateness(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    event = grant.revoked(grant.expires_at - timedelta(milliseconds=250), RevokeCause.SWEPT)
    assert grant.lateness_ms == -250
    assert event.data.lateness_ms == -250
    assert grant.revoke_cause == "swept"
    assert event.data.cause is RevokeCause.SWEPT


def test_revoked_exactly_on_time_has_zero_lateness(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    assert grant.revoked(grant.expires_at, RevokeCause.EXPIRED).data.lateness_ms == 0


def test_lateness_is_rounded_to_the_millisecond(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    grant.revoked(grant.expires_at + timedelta(microseconds=1600), RevokeCause.EXPIRED)
    assert grant.lateness_ms == 2


def test_fail_records_the_reason_and_returns_grant_failed(approval: RequestApproved) -> None:
    grant = Grant.for_approval(approval.data, "postgres-role")
    event = grant.fail("postgres refused: role app_readonly does not exist", cause=approval)
    assert grant.state is GrantState.FAILED
    assert grant.failure_reason == "postgres refused: role app_readonly does not exist"
    assert isinstance(event, GrantFailed)
    assert event.data.reason == grant.failure_reason
    assert event.data.grant_id == grant.id
    assert (event.data.resource, event.data.role) == ("orders-db", "app_readonly")
    assert event.causation_id == approval.id


def test_expire_command_can_be_rebuilt_for_an_active_grant(approval: RequestApproved) -> None:
    grant = _active(approval)
    again = grant.expire_command()
    assert again.data.grant_id == grant.id
    assert again.data.expires_at == grant.expires_at
    assert again.causation_id is None
