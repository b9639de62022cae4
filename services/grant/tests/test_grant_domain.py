"""Unit tests of the Grant aggregate (lapse_grant.domain): pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lapse_grant.domain import Grant, GrantState, backoff
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


def _new(approval: RequestApproved) -> Grant:
    return Grant.for_approval(approval.data, "postgres-role", {"dsn": "${DSN}"}, NOW, timedelta(minutes=5))


def _active(approval: RequestApproved) -> Grant:
    grant = _new(approval)
    grant.activate(NOW, cause=approval)
    return grant


def test_for_approval_copies_the_request_and_is_not_active_yet(approval: RequestApproved) -> None:
    grant = _new(approval)
    assert grant.request_id == approval.data.request_id
    assert (grant.subject, grant.resource, grant.role) == ("alice", "orders-db", "app_readonly")
    assert grant.provider == "postgres-role"
    assert grant.duration_seconds == 5400
    assert grant.state is GrantState.PROVISIONING
    assert grant.target == {"dsn": "${DSN}"}
    assert grant.provision_deadline == NOW + timedelta(minutes=5)
    assert grant.next_attempt_at == NOW
    assert grant.granted_at is None
    # The window is fixed at approval: it counts from approved_at, not from activation.
    assert grant.expires_at == approval.data.approved_at + timedelta(seconds=5400)


def test_each_grant_gets_its_own_id(approval: RequestApproved) -> None:
    assert _new(approval).id != _new(approval).id


def test_activate_keeps_the_expiry_counted_from_the_approval(approval: RequestApproved) -> None:
    grant = _new(approval)
    grant.activate(NOW + timedelta(seconds=30), cause=approval)
    assert grant.state is GrantState.ACTIVE
    assert grant.granted_at == NOW + timedelta(seconds=30)
    assert grant.expires_at == approval.data.approved_at + timedelta(seconds=5400)


def test_activate_returns_grant_activated_and_the_expire_command(approval: RequestApproved) -> None:
    grant = _new(approval)
    activated, expire = grant.activate(NOW, cause=approval)
    assert isinstance(activated, GrantActivated)
    assert activated.data.grant_id == grant.id
    assert activated.data.request_id == approval.data.request_id
    assert activated.data.subject == "alice"
    assert activated.data.granted_at == NOW
    assert activated.data.expires_at == approval.data.approved_at + timedelta(minutes=90)
    assert activated.causation_id == approval.id
    assert activated.correlation_id == approval.data.request_id
    assert isinstance(expire, GrantExpire)
    assert expire.type == "grant.expire"
    assert expire.data.grant_id == grant.id
    assert expire.data.expires_at == activated.data.expires_at
    assert expire.causation_id == activated.id


def test_a_transient_provisioning_error_schedules_a_retry_before_the_deadline(
    approval: RequestApproved,
) -> None:
    grant = _new(approval)
    assert grant.provisioning_failed("connection refused", NOW + timedelta(seconds=1), transient=True) is None
    assert grant.state is GrantState.PROVISIONING
    assert grant.provision_attempts == 1
    assert grant.next_attempt_at is not None
    assert grant.next_attempt_at > NOW + timedelta(seconds=1)


def test_a_transient_provisioning_error_past_the_deadline_fails_the_grant(approval: RequestApproved) -> None:
    grant = _new(approval)
    failed = grant.provisioning_failed("connection refused", NOW + timedelta(minutes=6), transient=True)
    assert failed is not None
    assert grant.state is GrantState.FAILED
    assert "connection refused" in failed.data.reason


def test_a_permanent_provisioning_error_fails_at_once(approval: RequestApproved) -> None:
    grant = _new(approval)
    failed = grant.provisioning_failed("role does not exist", NOW, transient=False)
    assert failed is not None
    assert failed.data.reason == "role does not exist"
    assert grant.next_attempt_at is None


def test_failed_revocations_are_rescheduled_and_alert_once_at_the_threshold(
    approval: RequestApproved,
) -> None:
    grant = _active(approval)
    alerts = [grant.revoke_failed("target down", NOW, alert_after=3) for _ in range(6)]
    assert [a is not None for a in alerts] == [False, False, True, False, False, False]
    alert = alerts[2]
    assert alert is not None
    assert alert.data.attempts == 3
    assert alert.data.error == "target down"
    assert grant.state is GrantState.ACTIVE, "a failed revocation must not mark the grant ended"
    assert grant.next_attempt_at is not None
    assert grant.next_attempt_at > NOW


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 40])
def test_backoff_grows_exponentially_with_jitter_and_a_cap(attempt: int) -> None:
    delays = [backoff(attempt).total_seconds() for _ in range(50)]
    ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1, "no jitter"


def test_revoked_with_retained_access_and_an_actor_says_so(approval: RequestApproved) -> None:
    grant = _active(approval)
    event = grant.revoked(NOW, RevokeCause.REVOKED, retained=True, actor="sec", reason="stolen laptop")
    assert event.data.access_retained is True
    assert (event.data.revoked_by, event.data.revoke_reason) == ("sec", "stolen laptop")
    assert grant.access_key == "orders-db\x1falice\x1fapp_readonly"


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


def test_revoked_before_expiry_is_recorded_as_early_not_negative_lateness(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    event = grant.revoked(grant.expires_at - timedelta(milliseconds=250), RevokeCause.SWEPT)
    assert (grant.lateness_ms, grant.ended_early_ms) == (0, 250)
    assert (event.data.lateness_ms, event.data.ended_early_ms) == (0, 250)
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
    grant = _new(approval)
    event = grant.fail("postgres refused: role app_readonly does not exist")
    assert grant.state is GrantState.FAILED
    assert grant.failure_reason == "postgres refused: role app_readonly does not exist"
    assert isinstance(event, GrantFailed)
    assert event.data.reason == grant.failure_reason
    assert event.data.grant_id == grant.id
    assert (event.data.resource, event.data.role) == ("orders-db", "app_readonly")


def test_expire_command_can_be_rebuilt_for_an_active_grant(approval: RequestApproved) -> None:
    grant = _active(approval)
    again = grant.expire_command()
    assert again.data.grant_id == grant.id
    assert again.data.expires_at == grant.expires_at
    assert again.causation_id is None


def _approved(approval: RequestApproved, **changes: object) -> RequestApprovedData:
    return approval.data.model_copy(update=changes)


def test_a_future_start_is_scheduled_with_the_window_counted_from_the_start(
    approval: RequestApproved,
) -> None:
    start = NOW + timedelta(hours=2)
    grant = Grant.for_approval(
        _approved(approval, start_at=start), "postgres-role", {}, NOW, timedelta(minutes=5)
    )
    assert grant.state is GrantState.SCHEDULED
    assert grant.next_attempt_at is None, "the retrier must not provision it before its start"
    assert grant.expires_at == start + timedelta(seconds=5400)
    assert grant.provision_deadline == start + timedelta(minutes=5)
    command = grant.start_command()
    assert command.type == "grant.start"
    assert (command.data.grant_id, command.data.start_at) == (grant.id, start)
    grant.start(start)
    assert grant.state is GrantState.PROVISIONING
    assert grant.next_attempt_at == start


def test_a_start_already_passed_provisions_at_once(approval: RequestApproved) -> None:
    start = NOW - timedelta(minutes=1)
    grant = Grant.for_approval(
        _approved(approval, start_at=start), "postgres-role", {}, NOW, timedelta(minutes=5)
    )
    assert grant.state is GrantState.PROVISIONING
    assert grant.expires_at == start + timedelta(seconds=5400)


def test_window_over_once_expiry_is_reached(approval: RequestApproved) -> None:
    grant = _new(approval)
    assert grant.expires_at is not None
    assert not grant.window_over(grant.expires_at - timedelta(microseconds=1))
    assert grant.window_over(grant.expires_at)


def test_revoking_a_scheduled_grant_says_nothing_was_provisioned(approval: RequestApproved) -> None:
    grant = Grant.for_approval(
        _approved(approval, start_at=NOW + timedelta(hours=1)), "postgres-role", {}, NOW, timedelta(minutes=5)
    )
    event = grant.revoked(NOW, RevokeCause.RELEASED, actor="alice", reason="not needed")
    assert grant.state is GrantState.REVOKED
    assert event.data.provisioned is False
    assert event.data.cause is RevokeCause.RELEASED
    assert _active(approval).revoked(NOW, RevokeCause.REVOKED).data.provisioned is True


def test_extension_moves_the_expiry_later_never_earlier(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    before = grant.expires_at
    extension_id = uuid.uuid4()
    event = grant.extend(extension_id, before + timedelta(hours=1), NOW)
    assert grant.expires_at == before + timedelta(hours=1)
    assert event.type == "grant.extended"
    assert event.correlation_id == extension_id
    assert (event.data.request_id, event.data.extension_request_id) == (grant.request_id, extension_id)
    assert (event.data.previous_expires_at, event.data.expires_at) == (before, before + timedelta(hours=1))
    assert grant.extend(uuid.uuid4(), before, NOW).data.expires_at == before + timedelta(hours=1)


def test_extension_problems_name_what_does_not_match(approval: RequestApproved) -> None:
    grant = _active(approval)
    ext = _approved(approval, request_id=uuid.uuid4(), extends_grant_id=grant.id)
    assert grant.extension_problem(ext, NOW) is None
    other = grant.extension_problem(_approved(approval, requester="mallory"), NOW)
    assert other is not None
    assert "mallory" in other
    assert grant.expires_at is not None
    lapsed = grant.extension_problem(ext, grant.expires_at)
    assert lapsed is not None
    assert "lapsed" in lapsed
    grant.revoked(NOW, RevokeCause.REVOKED)
    ended = grant.extension_problem(ext, NOW)
    assert ended is not None
    assert "revoked, not active" in ended


def test_an_end_weeks_early_is_recorded_beyond_32_bits(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    event = grant.revoked(grant.expires_at - timedelta(days=40), RevokeCause.REVOKED, actor="sec", reason="x")
    assert event.data.ended_early_ms == 40 * 86_400_000 > 2**31
    assert event.data.lateness_ms == 0


def test_a_kill_switch_finished_by_the_retrier_stays_a_kill_switch(approval: RequestApproved) -> None:
    grant = _active(approval)
    assert grant.expires_at is not None
    grant.begin_revocation(RevokeCause.REVOKED, actor="sec", reason="laptop stolen")
    assert grant.state is GrantState.REVOKING
    event = grant.revoked(grant.expires_at - timedelta(hours=1), RevokeCause.SWEPT)
    assert event.data.cause is RevokeCause.REVOKED
    assert (event.data.revoked_by, event.data.revoke_reason) == ("sec", "laptop stolen")
