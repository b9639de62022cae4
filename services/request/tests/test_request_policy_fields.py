"""The fields issue 3's policies read travel from the submission to the policy and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lapse_request import domain, repository
from lapse_request.domain import State
from lapse_shared.catalogue import Catalogue, Resource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import (
    Outcome,
    PolicyDecided,
    PolicyDecidedData,
    RequestApproved,
    RequestSubmitted,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CATALOGUE = Catalogue(
    [Resource.model_validate({"name": "orders-db", "provider": "p", "roles": ["rw"], "max_duration": "8h"})]
)


def _submit(**more: object) -> domain.AccessRequest:
    return domain.submit(
        CATALOGUE,
        requester="olga",
        groups=["oncall"],
        resource="orders-db",
        role="rw",
        duration=timedelta(hours=1),
        reason="outage",
        now=T0,
        **more,  # type: ignore[arg-type]
    )


def test_ticket_break_glass_and_attributes_reach_the_submitted_event() -> None:
    request = _submit(ticket="  INC-9 ", break_glass=True, attributes={"department": "payments"})
    assert request.ticket == "INC-9"
    assert request.break_glass is True
    (event,) = request.events
    assert isinstance(event, RequestSubmitted)
    assert event.data.ticket == "INC-9"
    assert event.data.break_glass is True
    assert event.data.requester.attributes == {"department": "payments"}


def test_a_submission_without_them_keeps_the_v1_defaults() -> None:
    request = _submit()
    (event,) = request.events
    assert isinstance(event, RequestSubmitted)
    assert (event.data.ticket, event.data.break_glass, event.data.requester.attributes) == (None, False, {})
    blank = _submit(ticket="   ")
    assert blank.ticket is None


def test_a_break_glass_decision_is_flagged_on_the_approved_event() -> None:
    request = _submit(break_glass=True, ticket="INC-9")
    request.events.clear()
    data = PolicyDecidedData(
        request_id=request.id,
        outcome=Outcome.APPROVE,
        rule="oncall-break-glass",
        reasons=["matched rule 'oncall-break-glass'"],
        effective_duration_seconds=1800,
        policy_version="sha256:x",
        break_glass=True,
    )
    cause = PolicyDecided.create(source="lapse/policy", request_id=request.id, data=data)
    domain.apply_decision(request, data, cause, T0)
    assert request.state is State.APPROVED
    (approved,) = request.events
    assert isinstance(approved, RequestApproved)
    assert approved.data.break_glass is True
    assert approved.data.duration_seconds == 1800
    assert request.decision is not None
    assert request.decision["break_glass"] is True


@pytest.mark.integration
async def test_ticket_and_break_glass_are_stored_and_read_back(database_url: str) -> None:
    """Migration 0002 adds the columns; a request round-trips through the real database."""
    pool = await create_pool(database_url)
    try:
        await migrate(pool, repository.SCHEMA, "lapse_request.migrations")
        request = _submit(ticket="INC-9", break_glass=True)
        plain = _submit()
        async with pool.acquire() as conn:
            await repository.insert(conn, request)
            await repository.insert(conn, plain)
            stored = await repository.get(conn, request.id)
            stored_plain = await repository.get(conn, plain.id)
    finally:
        await pool.close()
    assert stored is not None
    assert stored_plain is not None
    assert (stored.ticket, stored.break_glass) == ("INC-9", True)
    assert (stored_plain.ticket, stored_plain.break_glass) == (None, False)
