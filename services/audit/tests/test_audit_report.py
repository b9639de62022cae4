"""The access report folds the audit events of each request into one row per grant."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from lapse_audit import report
from services.audit.tests.events import T0, lifecycle


def test_a_policy_approved_grant_that_expired_has_every_field_but_approvers() -> None:
    events = lifecycle(minutes=30)
    [row] = report.build(events, T0, T0 + timedelta(days=1))
    assert (row.requester, row.resource, row.role) == ("alice", "orders-db", "orders_readonly")
    assert row.reason == "INC-1234: stuck orders"
    assert row.ticket is None
    assert row.approvers == []
    assert (row.decision, row.rule, row.policy_version) == ("approve", "developers-read", "sha256:abc")
    assert row.status == "expired"
    assert row.ended_by == "expired"
    assert row.lateness_ms == 40
    assert row.granted_at == (T0 + timedelta(seconds=2)).isoformat()
    assert row.ended_at is not None


def test_tickets_and_reviewers_are_picked_up_when_events_carry_them() -> None:
    events = lifecycle(reviewers=("bob", "carol"), extra_submitted={"ticket": "CHG-42"})
    [row] = report.build(events, T0, T0 + timedelta(days=1))
    assert row.ticket == "CHG-42"
    assert row.approvers == ["bob", "carol"]
    assert row.decision == "review"


def test_an_early_revocation_names_who_ended_it() -> None:
    [row] = report.build(lifecycle(cause="revoked"), T0, T0 + timedelta(days=1))
    assert row.status == "revoked"
    assert row.ended_by == "sec-oncall"


def test_an_active_grant_has_no_end_and_grants_outside_the_period_are_left_out() -> None:
    active = lifecycle(requester="dave")[:-1]  # not revoked yet
    before = lifecycle(requester="erin", start=T0 - timedelta(days=3))
    after = lifecycle(requester="frank", start=T0 + timedelta(days=2))
    rows = report.build([*before, *active, *after], T0, T0 + timedelta(days=1))
    assert [r.requester for r in rows] == ["dave"]
    assert rows[0].status == "active"
    assert rows[0].ended_at is None


def test_a_grant_spanning_the_period_start_is_included() -> None:
    spanning = lifecycle(start=T0 - timedelta(minutes=10), minutes=60)
    assert len(report.build(spanning, T0, T0 + timedelta(hours=1))) == 1


def test_csv_has_one_row_per_grant_and_defuses_spreadsheet_formulas() -> None:
    events = lifecycle(reviewers=("bob",))
    events[0]["data"]["reason"] = '=HYPERLINK("http://x")'
    text = report.as_csv(report.build(events, T0, T0 + timedelta(days=1)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    assert tuple(rows[0]) == report.COLUMNS
    assert rows[0]["reason"].startswith("'=")
    assert rows[0]["approvers"] == "bob"
    assert rows[0]["ticket"] == ""
